// The Swift half of `make bench-pdr` (bench/pdr.sh runs it around the sandbox, the gateway and pdr-reporter).
//
// usage: pdr-bench setup <gatewayURL> <gatewayInternalURL> <sandboxURL> <adminToken> <internalToken> <apps>
//            registers <apps> OAuth apps in the sandbox and at the gateway (one tenant per app, admin API), signs one
//            sandbox user in per app through the real gateway flow (start → sandbox authorize → callback → exchange),
//            checks the gateway now hands out a reporting token for each app, then installs the benchmark's fault
//            rule (10 % 429 with Retry-After 1 on report-accounts, every app). Prints one "<appId> <tenantId>" line
//            per app.
//        pdr-bench produce <bootstrap> <topic> <count> <partitions> <appId:tenantId,...>
//            creates the accounts topic (the reporter's partition count and topic config) and produces <count>
//            AccountHeld (distinct 24-hex accountIds, round-robin over the apps, key appId:accountId, CloudEvents
//            headers); prints "produced <count> <seconds>"
//        pdr-bench produce-reported <bootstrap> <topic> <count> <partitions> <appId:tenantId,...> <due-in-seconds>
//            the changelog of those accounts, as a reporter leaves it: creates the reports topic and produces one
//            AccountReported per account `produce` made (reported now, next due <due-in-seconds> from now); prints
//            "produced <count> <seconds>" (bench/scale.sh restores a partition of them)
//        pdr-bench analyze <sandboxURL> <cycleSeconds> <appId:count,...> [<due-file>]
//            reads the sandbox's PDR call log and prints the benchmark's lines (see `analyze`). The due file (lines
//            "<appId> <accountId> <first due, epoch ms>", from the reporter's registry) adds how late each account's
//            first report came. PDR_BENCH_CALL_LOG=<path> also writes the raw call log there.
import Contracts
import Foundation
import Logging
import Messaging
import ServiceLifecycle
import AsyncHTTPClient
import NIOCore
import NIOHTTP1

var logger = Logger(label: "pdr-bench")
logger.logLevel = .warning
let arguments = CommandLine.arguments

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("pdr-bench: \(message)\n".utf8))
    exit(1)
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
}

// MARK: HTTP

struct Answer {
    var status: Int
    var location: String?
    var body: Data

    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body) as? [String: Any]) ?? [:] }
    var text: String { String(decoding: body.prefix(500), as: UTF8.self) }
}

func call(_ http: HTTPClient, _ method: HTTPMethod, _ url: String, headers: [(String, String)] = [],
          body: String? = nil, limit: Int = 1 << 20) async throws -> Answer {
    var request = HTTPClientRequest(url: url)
    request.method = method
    for (name, value) in headers { request.headers.add(name: name, value: value) }
    if let body { request.body = .bytes(ByteBuffer(string: body)) }
    let response = try await http.execute(request, timeout: .seconds(120))
    let bytes = try await response.body.collect(upTo: limit)
    return Answer(status: Int(response.status.code), location: response.headers.first(name: "location"),
                  body: Data(bytes.readableBytesView))
}

func expect(_ answer: Answer, _ status: Int, _ step: String) throws {
    guard answer.status == status else { throw BenchError(description: "\(step): HTTP \(answer.status) \(answer.text)") }
}

func makeHTTPClient() -> HTTPClient {
    var configuration = HTTPClient.Configuration()
    configuration.redirectConfiguration = .disallow
    return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
}

func withHTTP<T>(_ body: (HTTPClient) async throws -> T) async -> T {
    let http = makeHTTPClient()
    do {
        let result = try await body(http)
        try? await http.shutdown()
        return result
    } catch {
        try? await http.shutdown()
        fail("\(error)")
    }
}

// MARK: setup

/// One app: sandbox app, gateway tenant using it, one user signed in through the gateway (so the gateway holds a
/// connection — a grant — the reporting-token API can hand out).
func setUpApp(http: HTTPClient, gateway: String, gatewayInternal: String, sandbox: String, admin: String,
              internalToken: String, index: Int, run: String) async throws -> (app: String, tenant: String) {
    let tenant = "pdr-bench-\(run)-t\(index)"
    let app = "pdr-bench-\(run)-app\(index)"
    let secret = "pdr-bench-app-secret-\(index)-0123456789"
    let user = String(format: "5c0000000000000000%06x", index)
    let callback = gateway + "/v1/signin/atlassian/callback"
    let returnURL = "https://tenant.example/return"
    let jsonType = [("content-type", "application/json")]
    try expect(try await call(http, .POST, sandbox + "/_sandbox/apps", headers: jsonType,
        body: #"{"clientId":"\#(app)","clientSecret":"\#(secret)","callbackUrl":"\#(callback)"}"#), 201, "sandbox app")
    try expect(try await call(http, .POST, sandbox + "/_sandbox/users", headers: jsonType,
        body: #"{"accountId":"\#(user)","name":"PDR Bench \#(index)","email":"pdr\#(index)@bench.example","nickname":"pdr\#(index)","picture":"https://avatars.example/\#(index).png"}"#),
        201, "sandbox user")
    let created = try await call(http, .POST, gateway + "/v1/tenants",
                                 headers: jsonType + [("authorization", "Bearer \(admin)")], body: #"{"tenantId":"\#(tenant)"}"#)
    try expect(created, 201, "gateway tenant")
    guard let tenantSecret = created.json["clientSecret"] as? String else { throw BenchError(description: "tenant: no clientSecret") }
    let token = try await call(http, .POST, gateway + "/oauth/token",
                               headers: [("content-type", "application/x-www-form-urlencoded")],
                               body: "grant_type=client_credentials&client_id=\(tenant)&client_secret=\(tenantSecret)")
    try expect(token, 200, "tenant token")
    guard let tenantToken = token.json["access_token"] as? String else { throw BenchError(description: "tenant token: none") }
    let bearer = jsonType + [("authorization", "Bearer \(tenantToken)")]
    try expect(try await call(http, .PUT, gateway + "/v1/tenants/\(tenant)/app", headers: bearer,
        body: #"{"clientId":"\#(app)","clientSecret":"\#(secret)"}"#), 200, "gateway app")
    try expect(try await call(http, .PUT, gateway + "/v1/tenants/\(tenant)/settings", headers: bearer,
        body: #"{"returnUrls":["\#(returnURL)"]}"#), 200, "gateway settings")

    // The real sign-in, as a browser and the tenant's backend do it (see bench/signin-bench).
    let start = try await call(http, .GET, gateway + "/v1/tenants/\(tenant)/signin/atlassian?redirect_uri="
        + returnURL.addingPercentEncoding(withAllowedCharacters: .alphanumerics)! + "&state=s\(index)")
    try expect(start, 302, "sign-in start")
    let authorize = try await call(http, .GET, start.location! + "&sandbox_user=\(user)")
    try expect(authorize, 302, "sandbox authorize")
    let callbackAnswer = try await call(http, .GET, authorize.location!)
    try expect(callbackAnswer, 302, "gateway callback")
    guard let code = URLComponents(string: callbackAnswer.location!)?.queryItems?.first(where: { $0.name == "code" })?.value
    else { throw BenchError(description: "callback: no code in \(callbackAnswer.location!)") }
    try expect(try await call(http, .POST, gateway + "/v1/signin/exchange", headers: bearer, body: #"{"code":"\#(code)"}"#),
               200, "sign-in exchange")

    // What the reporter will ask: the app now has a usable grant.
    try expect(try await call(http, .POST, gatewayInternal + "/internal/v1/apps/\(app)/reporting-token",
                              headers: jsonType + [("authorization", "Bearer \(internalToken)")], body: #"{"exclude":[]}"#),
               200, "reporting token")
    return (app, tenant)
}

// MARK: produce

/// `appId:tenantId,...` as given on the command line.
func parseApps(_ argument: String) -> [(app: String, tenant: String)] {
    let apps: [(app: String, tenant: String)] = argument.split(separator: ",").map {
        let parts = $0.split(separator: ":", maxSplits: 1)
        return (String(parts[0]), String(parts.count > 1 ? parts[1] : ""))
    }
    guard !apps.isEmpty, apps.allSatisfy({ !$0.tenant.isEmpty }) else { fail("apps must be appId:tenantId,...") }
    return apps
}

/// The accountId of bench account `index`: 24 lowercase hex characters, Atlassian-style; distinct per index.
func benchAccountId(_ index: Int, apps: Int) -> String {
    String(format: "5be2%04x%016llx", index % apps, UInt64(index) &* 0x9e37_79b9_7f4a_7c15)
}

/// Creates `topic` as `declared` says (with `partitions`), produces `count` records made
/// by `message`, in sends of 10,000, and prints "produced <count> <seconds>".
@MainActor
func produceAll(bootstrap: String, topic: String, declared: TopicDefinition, partitions: Int, count: Int,
                message: (Int) throws -> OutgoingMessage) async {
    do {
        try await KafkaAdmin(bootstrapServers: bootstrap, logger: logger).ensureTopics([
            TopicSpec(name: topic, partitions: partitions, config: declared.kafkaConfig),
        ])
        var messages: [OutgoingMessage] = []
        messages.reserveCapacity(count)
        for index in 0..<count { messages.append(try message(index)) }
        let producer = try KafkaProducer(config: KafkaProducerConfig(bootstrapServers: bootstrap), logger: logger)
        let group = ServiceGroup(configuration: .init(services: [.init(service: producer)], logger: logger))
        let start = Date()
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            for chunk in stride(from: 0, to: count, by: 10_000) {
                try await producer.send(Array(messages[chunk..<min(count, chunk + 10_000)]))
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        print("produced \(count) \(Date().timeIntervalSince(start))")
    } catch {
        fail("produce to \(topic): \(error)")
    }
}

// MARK: main

switch arguments.count > 1 ? arguments[1] : "" {
case "setup" where arguments.count == 8:
    let (gateway, gatewayInternal, sandbox) = (arguments[2], arguments[3], arguments[4])
    let (admin, internalToken) = (arguments[5], arguments[6])
    guard let apps = Int(arguments[7]), apps > 0 else { fail("bad app count") }
    let run = String(format: "%08x", UInt32.random(in: 0...UInt32.max))
    let lines = await withHTTP { http in
        var lines: [String] = []
        for index in 0..<apps {
            let (app, tenant) = try await setUpApp(
                http: http, gateway: gateway, gatewayInternal: gatewayInternal, sandbox: sandbox, admin: admin,
                internalToken: internalToken, index: index, run: run)
            lines.append("\(app) \(tenant)")
        }
        // After the sign-ins, so only PDR calls see faults: 10 % of report-accounts answer 429, Retry-After 1 s.
        try expect(try await call(http, .POST, sandbox + "/_sandbox/faults", headers: [("content-type", "application/json")],
            body: #"{"endpoint":"report-accounts","random":[{"probability":0.1,"fault":{"kind":"429","retryAfter":1}}]}"#),
            200, "fault rule")
        return lines
    }
    for line in lines { print(line) }

case "produce" where arguments.count == 7:
    let (bootstrap, topic) = (arguments[2], arguments[3])
    guard let count = Int(arguments[4]), let partitions = Int(arguments[5]) else { fail("bad numbers") }
    let apps = parseApps(arguments[6])
    // updatedAt: when the data was retrieved, spread over the last day (whole milliseconds, as RFC 3339 carries).
    let base = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 - 86_400).rounded())
    await produceAll(bootstrap: bootstrap, topic: topic, declared: Topics.pdrAccounts, partitions: partitions,
                     count: count) { index in
        let (app, tenant) = apps[index % apps.count]
        let accountId = benchAccountId(index, apps: apps.count)
        let event = AccountHeld(appId: app, accountId: accountId,
                                updatedAt: base.addingTimeInterval(Double(index % 86_400)), tenantIds: [tenant])
        return try OutgoingMessage(event: event, topic: topic, key: "\(app):\(accountId)", source: "lethe/pdr-bench")
    }

case "produce-reported" where arguments.count == 8:
    let (bootstrap, topic) = (arguments[2], arguments[3])
    guard let count = Int(arguments[4]), let partitions = Int(arguments[5]), let dueIn = Double(arguments[7]) else {
        fail("bad numbers")
    }
    let apps = parseApps(arguments[6])
    let reportedAt = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded())
    await produceAll(bootstrap: bootstrap, topic: topic, declared: Topics.pdrReports, partitions: partitions,
                     count: count) { index in
        let app = apps[index % apps.count].app
        let accountId = benchAccountId(index, apps: apps.count)
        let event = AccountReported(appId: app, accountId: accountId, reportedAt: reportedAt,
                                    nextDueAt: reportedAt.addingTimeInterval(dueIn))
        return try OutgoingMessage(event: event, topic: topic, key: "\(app):\(accountId)", source: "lethe/pdr-bench")
    }

case "produce-paced" where arguments.count == 7:
    // Continuous arrivals (issue 15, fewest calls): <count> AccountHeld of one app:tenant, evenly over <seconds>, as
    // sign-ins would bring them; each sent and acknowledged in its turn.
    let (bootstrap, topic) = (arguments[2], arguments[3])
    guard let count = Int(arguments[4]), count > 0, let seconds = Double(arguments[6]), seconds > 0 else {
        fail("bad numbers")
    }
    let parts = arguments[5].split(separator: ":", maxSplits: 1)
    guard parts.count == 2 else { fail("app must be appId:tenantId") }
    let (app, tenant) = (String(parts[0]), String(parts[1]))
    do {
        let producer = try KafkaProducer(config: KafkaProducerConfig(bootstrapServers: bootstrap), logger: logger)
        let group = ServiceGroup(configuration: .init(services: [.init(service: producer)], logger: logger))
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            for index in 0..<count {
                try await Task.sleep(until: start + .seconds(seconds * Double(index) / Double(count)))
                let accountId = String(format: "5be3%020llx", UInt64(index) &* 0x9e37_79b9_7f4a_7c15)
                let event = AccountHeld(appId: app, accountId: accountId, updatedAt: Date(timeIntervalSince1970: 1_700_000_000),
                                        tenantIds: [tenant])
                try await producer.send(try OutgoingMessage(event: event, topic: topic, key: "\(app):\(accountId)",
                                                            source: "lethe/pdr-bench"))
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        print("produced \(count) over \(start.duration(to: .now))")
    } catch {
        fail("produce-paced: \(error)")
    }

case "analyze" where arguments.count == 5 || arguments.count == 6:
    guard let cycle = Double(arguments[3]) else { fail("bad cycle") }
    let expected: [(app: String, count: Int)] = arguments[4].split(separator: ",").map {
        let parts = $0.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, let count = Int(parts[1]) else { fail("apps must be appId:count,...") }
        return (String(parts[0]), count)
    }
    await analyze(sandbox: arguments[2], cycleSeconds: cycle, expected: expected,
                  dueFile: arguments.count == 6 ? arguments[5] : nil)

default:
    fail("usage: pdr-bench setup <gateway> <gateway-internal> <sandbox> <admin> <internal> <apps> | produce <bootstrap> <topic> <count> <partitions> <app:tenant,...> | produce-reported <bootstrap> <topic> <count> <partitions> <app:tenant,...> <due-in-seconds> | analyze <sandbox> <cycle-seconds> <app:count,...> [<due-file>]")
}
