import Contracts
import Foundation
import Hummingbird
import Metrics
import NIOCore
import ServiceKit

extension GatewayAPI {
    // MARK: Parsing

    static func decode<T: Decodable>(_ type: T.Type, _ request: Request, reason: String) async throws -> T {
        let buffer = try await request.body.collect(upTo: maxBody)
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer: buffer))
        } catch {
            throw HTTPError(.badRequest, message: reason)
        }
    }

    /// A form (`application/x-www-form-urlencoded`) or flat JSON object body, as strings.
    static func formOrJSON(_ request: Request) async throws -> [String: String] {
        let buffer = try await request.body.collect(upTo: maxBody)
        let data = Data(buffer: buffer)
        let declaredJSON = request.headers[.contentType]?.lowercased().hasPrefix("application/json") == true
        if declaredJSON || data.first == UInt8(ascii: "{") {
            guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw HTTPError(.badRequest, message: "body must be a JSON object")
            }
            return object.compactMapValues { $0 as? String }
        }
        return FormFields(decoding: String(decoding: data, as: UTF8.self)).firstValues
    }

    /// `Authorization: Basic base64(client_id:client_secret)` (RFC 6749 §2.3.1), if present.
    static func basicCredentials(_ request: Request) -> (String, String)? {
        guard let value = request.headers[.authorization], value.lowercased().hasPrefix("basic "),
              let data = Data(base64Encoded: String(value.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
              let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":")
        else { return nil }
        func decoded(_ part: Substring) -> String { String(part).removingPercentEncoding ?? String(part) }
        return (decoded(text[..<colon]), decoded(text[text.index(after: colon)...]))
    }

    /// Counts one request at `endpoint` (`authorize` or `token`) from the request's client IP address
    /// (``Gateway/ipRate``) and, when given, of `client` (``Gateway/clientRate``); the seconds to wait when it is one
    /// too many for either.
    static func overLimit(
        _ endpoint: String, client: String?, request: Request, context: LetheRequestContext, gateway: Gateway
    ) -> Int? {
        if let address = gateway.clientAddresses.clientAddress(of: request, context: context),
           let retryAfter = gateway.ipRate.take(endpoint + ":" + address)
        {
            Counter(label: "lethe_gateway_rate_limited_total", dimensions: [("endpoint", endpoint), ("by", "ip")])
                .increment()
            return retryAfter
        }
        guard let client, let retryAfter = gateway.clientRate.take(endpoint + ":" + client) else { return nil }
        Counter(label: "lethe_gateway_rate_limited_total", dimensions: [("endpoint", endpoint), ("by", "client")])
            .increment()
        return retryAfter
    }

    /// 429 with `Retry-After`, in the house error shape.
    static func tooManyRequests(_ retryAfter: Int) -> HTTPError {
        HTTPError(.tooManyRequests, headers: [.retryAfter: String(retryAfter)],
                  message: "too many requests; retry in \(retryAfter) s")
    }

    /// An RFC 6749 §5.2 error body.
    static func oauthError(
        _ status: HTTPResponse.Status, _ error: String, _ description: String, retryAfter: Int? = nil
    ) -> Response {
        var headers: HTTPFields = [.contentType: "application/json", .cacheControl: "no-store"]
        if status == .unauthorized { headers[.wwwAuthenticate] = "Basic" }
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        let body = #"{"error":"\#(error)","error_description":"\#(description)"}"#
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    static func redirect(_ url: URL) -> Response { redirect(url.absoluteString) }

    static func redirect(_ location: String) -> Response {
        Response(status: .found, headers: [.location: location, .cacheControl: "no-store"])
    }

    /// `lethe` is reserved: it is the audience of tenant access tokens, and an ID token's audience is its tenant.
    static func isValidTenantId(_ id: String) -> Bool {
        guard (1...63).contains(id.count), id.first != "-", id != TenantAuthConfig.audience else { return false }
        return id.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "-" }
    }

    static func isValidClientId(_ id: String) -> Bool {
        guard (1...128).contains(id.count) else { return false }
        return id.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0)
        }
    }

    static func isValidURL(_ text: String) -> Bool {
        guard text.count <= 2048, let url = URL(string: text), let scheme = url.scheme?.lowercased(),
              ["http", "https"].contains(scheme), url.host?.isEmpty == false, url.fragment == nil
        else { return false }
        return true
    }
}
