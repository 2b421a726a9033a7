import HTTPTypes
import Hummingbird
import NIOCore

extension SandboxAnswer {
    var response: Response {
        var fields = HTTPFields()
        for (name, value) in headers {
            if let name = HTTPField.Name(name) { fields[name] = value }
        }
        guard let json else { return Response(status: .init(code: status), headers: fields) }
        fields[.contentType] = "application/json"
        return Response(status: .init(code: status), headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: json)))
    }
}

/// Lets `decode` return an answer through `Result`.
struct SandboxAnswerError: Error, Sendable {
    var answer: SandboxAnswer
}

extension SandboxAnswerError {
    var response: Response { answer.response }
}
