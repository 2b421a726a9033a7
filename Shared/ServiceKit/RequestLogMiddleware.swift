import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Metrics

extension HTTPField.Name {
    /// `X-Request-Id`: the caller's id for a request, or the one the service made; always in the response.
    package static let requestId = Self("X-Request-Id")!
}

/// Every service's access log, request id and per-route latency, in one place.
///
/// - **Request id.** The caller's `X-Request-Id` when it is a sane token (1–128 of `A-Z a-z 0-9 . _ -`), else a new
///   one. It comes back in the response's `X-Request-Id` (errors included) and is in the request's logger metadata
///   as `request`, so every line a handler logs for that request carries it.
/// - **One log line per request** at `info` (`debug` for `/health/…` and `/metrics`): `method`, `route` (the route template, e.g. `/v1/erasures/{id}`, or
///   `unmatched`), `status`, `ms`. Never the path as sent, the query string, a header value or a body: paths and
///   queries carry accountIds, sign-in codes and states.
/// - **Latency per route** in `lethe_http_request_duration_seconds{method,route,status}`.
/// - **One error shape** (``ErrorBody``): an `HTTPError` a handler throws is answered
///   `{"error": "<status as snake_case>", "message": "<reason>", "requestId": "<id>"}`, and any other error as a 500
///   of the same shape with no detail (its type is logged, never its text, which may hold personal data).
///   The sandbox passes `errorBodies: false`: it imitates Atlassian's answers, not ours.
///
/// Add it to a router before its routes (Hummingbird applies a middleware to the routes added after it).
package struct RequestLogMiddleware<Context: RequestContext>: RouterMiddleware {
    private let errorBodies: Bool

    /// - Parameter errorBodies: answer errors in Lethe's shape (``ErrorBody``); false leaves them as thrown.
    package init(errorBodies: Bool = true) {
        self.errorBodies = errorBodies
    }

    package func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let started = ContinuousClock.now
        let id = Self.requestId(request.headers[.requestId])
        var context = context
        // One id per request in the logs: ours (the caller's, or the one it is answered with) replaces Hummingbird's.
        context.logger[metadataKey: "hb.request.id"] = nil
        context.logger[metadataKey: "request"] = .string(id)
        do {
            var response = try await next(request, context)
            response.headers[.requestId] = id
            record(request, context: context, status: response.status, since: started)
            return response
        } catch {
            // Answered here rather than by the server, so that the error carries the id too.
            var response: Response
            do {
                response = try errorResponse(error, request: request, context: context, requestId: id)
            } catch {
                // Left to Hummingbird, which answers 500 (only without error bodies).
                record(request, context: context, status: .internalServerError, since: started)
                throw error
            }
            response.headers[.requestId] = id
            record(request, context: context, status: response.status, since: started)
            return response
        }
    }

    private func errorResponse(_ error: any Error, request: Request, context: Context, requestId: String) throws -> Response {
        guard errorBodies else {
            guard let error = error as? any HTTPResponseError else { throw error }
            return try error.response(from: request, context: context)
        }
        switch error {
        case let error as HTTPError:
            return ErrorBody(status: error.status, message: error.body, requestId: requestId)
                .response(status: error.status, headers: error.headers)
        case let error as any HTTPResponseError:  // e.g. a body over the size limit (413)
            return ErrorBody(status: error.status, message: nil, requestId: requestId)
                .response(status: error.status, headers: [:])
        default:
            // Not an answer a handler chose: a fault. Its type says where to look; its text may hold personal data.
            context.logger.error("request failed", metadata: ["error": "\(type(of: error))"])
            return ErrorBody(status: .internalServerError, message: nil, requestId: requestId)
                .response(status: .internalServerError, headers: [:])
        }
    }

    /// The caller's id if it is a sane token, else a new random one.
    static func requestId(_ offered: String?) -> String {
        if let offered, (1...128).contains(offered.utf8.count), offered.utf8.allSatisfy(Self.isTokenByte) {
            return offered
        }
        return UUID().uuidString.lowercased()
    }

    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }

    private func record(_ request: Request, context: Context, status: HTTPResponse.Status, since started: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - started
        // Hummingbird names a path no route matched `NotFound`; every real template starts with "/".
        let route = context.endpointPath.flatMap { $0.hasPrefix("/") ? $0 : nil } ?? "unmatched"
        let method = request.method.rawValue
        Timer(label: "lethe_http_request_duration_seconds", dimensions: [
            ("method", method), ("route", route), ("status", String(status.code)),
        ]).recordNanoseconds(elapsed.nanoseconds)
        let milliseconds = Double(elapsed.nanoseconds) / 1_000_000
        // Probes and scrapes come every few seconds: at debug, so that they do not drown the requests that matter.
        let level: Logger.Level = route.hasPrefix("/health/") || route == "/metrics" ? .debug : .info
        context.logger.log(level: level, "request", metadata: [
            "method": .string(method), "route": .string(route), "status": .stringConvertible(status.code),
            "ms": .string(String(format: "%.1f", milliseconds)),
        ])
    }
}

/// The body of every error a Lethe service answers: `{"error", "message", "requestId"}`.
///
/// `error` is the status as a stable snake_case code (`bad_request`, `not_found`, `service_unavailable`…) for
/// programs; `message` the reason for people (the status's phrase when the handler gave none) and never a secret or
/// personal data; `requestId` the `X-Request-Id` of the answer, to find the request's log lines.
package struct ErrorBody: Codable, Sendable, Equatable {
    package var error: String
    package var message: String
    package var requestId: String

    package init(status: HTTPResponse.Status, message: String?, requestId: String) {
        let phrase = status.reasonPhrase.isEmpty ? "error \(status.code)" : status.reasonPhrase
        self.error = phrase.lowercased().split(whereSeparator: { !$0.isLetter && !$0.isNumber }).joined(separator: "_")
        self.message = message ?? phrase.lowercased()
        self.requestId = requestId
    }

    /// This body as a JSON response with `status`, after `headers` (a challenge, a Retry-After).
    func response(status: HTTPResponse.Status, headers: HTTPFields) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Three strings always encode.
        let data = (try? encoder.encode(self)) ?? Data()
        var fields = headers
        fields[.contentType] = "application/json; charset=utf-8"
        return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

extension Duration {
    /// The duration in whole nanoseconds (saturating).
    fileprivate var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds.multipliedReportingOverflow(by: 1_000_000_000).overflow
            ? .max : seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
