import Hummingbird
import HummingbirdTesting
import ServiceKit
import Testing

@Suite("Bearer secrets")
struct BearerSecretTests {
    @Test("only the exact secret in an Authorization: Bearer header passes; everything else is 401 with a challenge")
    func onlyTheExactSecretPasses() async throws {
        let secret = BearerSecret("0123456789abcdef", realm: "admin token")
        #expect(secret.matches("0123456789abcdef"))
        for wrong in ["0123456789abcdeF", "0123456789abcde", "0123456789abcdef0", ""] {
            #expect(!secret.matches(wrong), "\(wrong)")
        }
        let router = Router()
        router.get("/guarded") { request, _ -> String in
            try secret.require(request)
            return "in"
        }
        try await Application(router: router).test(.router) { client in
            try await client.execute(uri: "/guarded", method: .get, headers: [.authorization: "Bearer 0123456789abcdef"]) {
                #expect($0.status == .ok)
            }
            for header in ["Bearer wrong", "0123456789abcdef", "Basic 0123456789abcdef", "Bearer"] {
                try await client.execute(uri: "/guarded", method: .get, headers: [.authorization: header]) { response in
                    #expect(response.status == .unauthorized, "\(header)")
                    #expect(response.headers[.wwwAuthenticate] == "Bearer")
                }
            }
            try await client.execute(uri: "/guarded", method: .get) { #expect($0.status == .unauthorized) }
        }
    }
}
