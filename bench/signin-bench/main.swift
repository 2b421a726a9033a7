import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// `signin-bench <gatewayURL> <sandboxURL> <adminToken> <count> <concurrency>`
///
/// Sets up a tenant with its own app (sandbox + gateway) and 100 sandbox users, then runs, in this process and on the
/// same machine: `count` bare sandbox sequences (authorize → token → /me, what any OAuth client does) and `count`
/// complete sign-ins through the gateway (start → sandbox authorize → callback → exchange), each with `concurrency`
/// in flight. A warm-up of 200 of each comes first and is not counted. Last line:
/// `signin: <n>/s, p99 <ms> ms (sandbox alone <n>/s, p99 <ms> ms; added p99 <ms> ms)`
@main
struct SignInBench {
    static func main() async throws {
        let arguments = CommandLine.arguments
        guard arguments.count == 6, let count = Int(arguments[4]), let concurrency = Int(arguments[5]) else {
            FileHandle.standardError.write(Data("usage: signin-bench <gatewayURL> <sandboxURL> <adminToken> <count> <concurrency>\n".utf8))
            exit(2)
        }
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: concurrency * 2)
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        do {
            let bench = try await Bench.setUp(http: http, gateway: arguments[1], sandbox: arguments[2], admin: arguments[3])
            _ = try await bench.measure(200, concurrency: concurrency, bench.sandboxAlone)
            _ = try await bench.measure(200, concurrency: concurrency, bench.signIn)
            let alone = try await bench.measure(count, concurrency: concurrency, bench.sandboxAlone)
            let full = try await bench.measure(count, concurrency: concurrency, bench.signIn)
            try await http.shutdown()
            let added = full.p99 - alone.p99
            print(String(
                format: "signin: %.0f/s, p99 %.1f ms (sandbox alone %.0f/s, p99 %.1f ms; added p99 %.1f ms)",
                full.rate, full.p99, alone.rate, alone.p99, added))
        } catch {
            try? await http.shutdown()
            FileHandle.standardError.write(Data("signin-bench: \(error)\n".utf8))
            exit(1)
        }
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
}

struct Bench: Sendable {
    let http: HTTPClient
    let gateway: String
    let sandbox: String
    let appId: String
    let tenantId: String
    let tenantToken: String
    static let users = (0..<100).map { String(format: "5b10ac8d82e05b22cc7d%04x", $0) }
    static let returnURL = "https://tenant.example/return"
    static let appSecret = "bench-app-secret-0123456789"

    struct Answer {
        var status: Int
        var location: String?
        var body: Data
    }

    func call(_ method: HTTPMethod, _ url: String, headers: [(String, String)] = [], body: String? = nil) async throws -> Answer {
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        let response = try await http.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 1 << 20)
        return Answer(status: Int(response.status.code), location: response.headers.first(name: "location"), body: Data(bytes.readableBytesView))
    }

    func json(_ answer: Answer) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: answer.body) as? [String: Any]) ?? [:]
    }

    func expect(_ answer: Answer, _ status: Int, _ step: String) throws {
        guard answer.status == status else {
            throw BenchError(description: "\(step): HTTP \(answer.status) \(String(decoding: answer.body, as: UTF8.self))")
        }
    }

    /// Registers an app in the sandbox, 100 users, and a tenant using that app at the gateway; returns the bench
    /// ready to run.
    static func setUp(http: HTTPClient, gateway: String, sandbox: String, admin: String) async throws -> Bench {
        let tenant = "bench-\(UInt32.random(in: 0...UInt32.max))"
        let app = "bench-app-\(tenant)"
        let callback = gateway + "/v1/signin/atlassian/callback"
        let setup = Bench(http: http, gateway: gateway, sandbox: sandbox, appId: app, tenantId: tenant, tenantToken: "")
        let jsonType = [("content-type", "application/json")]
        try setup.expect(try await setup.call(.POST, sandbox + "/_sandbox/apps", headers: jsonType,
            body: #"{"clientId":"\#(app)","clientSecret":"\#(appSecret)","callbackUrl":"\#(callback)"}"#), 201, "sandbox app")
        for user in users {
            let created = try await setup.call(.POST, sandbox + "/_sandbox/users", headers: jsonType,
                body: #"{"accountId":"\#(user)","name":"Bench \#(user)","email":"\#(user)@bench.example","nickname":"b\#(user)","picture":"https://avatars.example/\#(user).png"}"#)
            try setup.expect(created, 201, "sandbox user")
        }
        let created = try await setup.call(.POST, gateway + "/v1/tenants", headers: jsonType + [("authorization", "Bearer \(admin)")],
                                           body: #"{"tenantId":"\#(tenant)"}"#)
        try setup.expect(created, 201, "tenant")
        let secret = setup.json(created)["clientSecret"] as! String
        let token = try await setup.call(.POST, gateway + "/oauth/token",
                                         headers: [("content-type", "application/x-www-form-urlencoded")],
                                         body: "grant_type=client_credentials&client_id=\(tenant)&client_secret=\(secret)")
        try setup.expect(token, 200, "tenant token")
        let bench = Bench(http: http, gateway: gateway, sandbox: sandbox, appId: app, tenantId: tenant,
                          tenantToken: setup.json(token)["access_token"] as! String)
        let bearer = jsonType + [("authorization", "Bearer \(bench.tenantToken)")]
        try bench.expect(try await bench.call(.PUT, gateway + "/v1/tenants/\(tenant)/app", headers: bearer,
            body: #"{"clientId":"\#(app)","clientSecret":"\#(appSecret)"}"#), 200, "app")
        try bench.expect(try await bench.call(.PUT, gateway + "/v1/tenants/\(tenant)/settings", headers: bearer,
            body: #"{"returnUrls":["\#(returnURL)"]}"#), 200, "settings")
        return bench
    }

    /// What any OAuth client does against Atlassian alone: authorize (consent), code for tokens, /me.
    func sandboxAlone(_ index: Int) async throws {
        let user = Self.users[index % Self.users.count]
        let redirect = gateway + "/v1/signin/atlassian/callback"
        let authorize = try await call(
            .GET, sandbox + "/authorize?client_id=\(appId)&scope=read%3Ame%20offline_access&redirect_uri="
                + redirect.addingPercentEncoding(withAllowedCharacters: .alphanumerics)! + "&state=s&response_type=code&sandbox_user=\(user)")
        try expect(authorize, 302, "authorize")
        let code = URLComponents(string: authorize.location!)!.queryItems!.first { $0.name == "code" }!.value!
        let token = try await call(.POST, sandbox + "/oauth/token", headers: [("content-type", "application/json")], body: """
            {"grant_type":"authorization_code","client_id":"\(appId)","client_secret":"\(Self.appSecret)","code":"\(code)","redirect_uri":"\(redirect)"}
            """)
        try expect(token, 200, "token")
        let access = json(token)["access_token"] as! String
        try expect(try await call(.GET, sandbox + "/me", headers: [("authorization", "Bearer \(access)")]), 200, "me")
    }

    /// A complete sign-in through the gateway, as a browser and the tenant's backend do it.
    func signIn(_ index: Int) async throws {
        let user = Self.users[index % Self.users.count]
        let start = try await call(
            .GET, gateway + "/v1/tenants/\(tenantId)/signin/atlassian?redirect_uri="
                + Self.returnURL.addingPercentEncoding(withAllowedCharacters: .alphanumerics)! + "&state=s\(index)")
        try expect(start, 302, "start")
        let authorize = try await call(.GET, start.location! + "&sandbox_user=\(user)")
        try expect(authorize, 302, "authorize")
        let callback = try await call(.GET, authorize.location!)
        try expect(callback, 302, "callback")
        guard let code = URLComponents(string: callback.location!)?.queryItems?.first(where: { $0.name == "code" })?.value else {
            throw BenchError(description: "callback: no code in \(callback.location!)")
        }
        let exchange = try await call(
            .POST, gateway + "/v1/signin/exchange",
            headers: [("content-type", "application/json"), ("authorization", "Bearer \(tenantToken)")],
            body: #"{"code":"\#(code)"}"#)
        try expect(exchange, 200, "exchange")
    }

    /// Runs `count` operations with `concurrency` in flight: the rate and the 99th percentile latency in ms.
    func measure(_ count: Int, concurrency: Int, _ operation: @escaping @Sendable (Int) async throws -> Void)
        async throws -> (rate: Double, p99: Double)
    {
        let clock = ContinuousClock()
        let started = clock.now
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for worker in 0..<concurrency {
                group.addTask {
                    var mine: [Double] = []
                    var index = worker
                    while index < count {
                        let begin = clock.now
                        try await operation(index)
                        let elapsed = clock.now - begin
                        mine.append(Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15)
                        index += concurrency
                    }
                    return mine
                }
            }
            return try await group.reduce(into: [Double]()) { $0 += $1 }.sorted()
        }
        let total = clock.now - started
        let seconds = Double(total.components.seconds) + Double(total.components.attoseconds) / 1e18
        let p99 = latencies[min(latencies.count - 1, Int(Double(latencies.count) * 0.99))]
        return (Double(count) / seconds, p99)
    }
}
