import Contracts
import Hummingbird

extension FormFields {
    /// A request's query string, form-decoded (`+` is a space); no query is no fields. The only way a service reads a
    /// query: Hummingbird's `uri.queryParameters` keeps `+` as it is.
    package init(query request: Request) { self.init(decoding: request.uri.query ?? "") }
}
