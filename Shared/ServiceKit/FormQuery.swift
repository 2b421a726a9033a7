import Contracts
import Hummingbird

extension FormFields {
    /// A request's query string, form-decoded (`+` is a space); no query is no fields. The only way a service reads a
    /// query: Hummingbird's `uri.queryParameters` keeps `+` as it is.
    package init(query request: Request) { self.init(decoding: request.uri.query ?? "") }

    /// A request's `application/x-www-form-urlencoded` body, at most `limit` bytes (more is Hummingbird's 413).
    package init(body request: Request, upTo limit: Int) async throws {
        let body = try await request.body.collect(upTo: limit)
        self.init(decoding: String(buffer: body))
    }
}
