import AsyncHTTPClient
import Foundation
import NIOCore

/// The sandbox's control API (`/_sandbox/…`, docs/openapi/atlassian-sandbox.yaml) as every test uses it: register an
/// app, add a user, or any other control call. Over HTTP, like everything a test asks of the sandbox.
package struct SandboxControl: Sendable {
    package struct Refused: Error, CustomStringConvertible {
        package var description: String
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    package let baseURL: String
    package let http: HTTPClient

    package init(baseURL: String, http: HTTPClient) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.http = http
    }

    /// A control call's answer (2xx).
    package struct Answer: Sendable {
        package var status: Int
        package var body: Data

        /// The body as a JSON object.
        package func json() throws -> [String: Any] {
            guard let object = try JSONSerialization.jsonObject(with: body) as? [String: Any] else {
                throw Refused(description: "not a JSON object: \(String(decoding: body, as: UTF8.self))")
            }
            return object
        }
    }

    /// POSTs `json` to `/_sandbox<path>`; throws with the status and body unless the sandbox answers 2xx.
    @discardableResult
    package func post(_ path: String, _ json: [String: Any] = [:]) async throws -> Answer {
        var request = HTTPClientRequest(url: baseURL + "/_sandbox" + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: json)))
        let response = try await http.execute(request, timeout: .seconds(10))
        let body = Data(try await response.body.collect(upTo: 1 << 20).readableBytesView)
        let status = Int(response.status.code)
        guard (200..<300).contains(status) else {
            throw Refused(description: "sandbox control \(path) answered \(status): \(String(decoding: body, as: UTF8.self))")
        }
        return Answer(status: status, body: body)
    }

    /// Registers an OAuth app (client id, secret, callback URL).
    package func registerApp(clientId: String, clientSecret: String, callbackURL: String) async throws {
        try await post("/apps", ["clientId": clientId, "clientSecret": clientSecret, "callbackUrl": callbackURL])
    }

    /// Adds a user with `accountId` and a profile derived from it, `profile` overriding any field (name, email,
    /// nickname, picture, or extra ones such as `emailVerified`).
    package func addUser(_ accountId: String, profile: [String: Any] = [:]) async throws {
        var body: [String: Any] = [
            "accountId": accountId, "name": "User \(accountId)", "email": "\(accountId)@example.com",
            "nickname": "nick-\(accountId)", "picture": "https://avatars.example.com/\(accountId).png",
        ]
        body.merge(profile) { $1 }
        try await post("/users", body)
    }
}
