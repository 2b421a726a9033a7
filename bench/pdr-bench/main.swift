// The Swift half of `make bench-pdr` (bench/pdr.sh runs it around the sandbox, the gateway and pdr-reporter).
//
// usage: pdr-bench setup <gatewayURL> <sandboxURL> <adminToken> <internalToken> <apps>
//            registers <apps> OAuth apps in the sandbox and at the gateway (one tenant per app, admin API), signs one
//            sandbox user in per app through the real gateway flow (start → sandbox authorize → callback → exchange),
//            checks the gateway now hands out a reporting token for each app, then installs the benchmark's fault
//            rule (10 % 429 with Retry-After 1 on report-accounts, every app). Prints one "<appId> <tenantId>" line
//            per app.
//        pdr-bench produce <bootstrap> <topic> <count> <partitions> <appId:tenantId,...>
//            creates the accounts topic (the reporter's partition count and topic config) and produces <count>
//            AccountHeld (distinct 24-hex accountIds, round-robin over the apps, key appId:accountId, CloudEvents
//            headers); prints "produced <count> <seconds>"
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
func setUpApp(http: HTTPClient, gateway: String, sandbox: String, admin: String, internalToken: String, index: Int,
              run: String) async throws -> (app: String, tenant: String) {
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
    try expect(try await call(http, .POST, gateway + "/internal/v1/apps/\(app)/reporting-token",
                              headers: jsonType + [("authorization", "Bearer \(internalToken)")], body: #"{"exclude":[]}"#),
               200, "reporting token")
    return (app, tenant)
}

// MARK: analysis

struct CallLog: Decodable {
    struct Call: Decodable {
        struct Account: Decodable {
            var accountId: String
        }

        var sequence: Int
        var clientId: String?
        var accounts: [Account]
        var status: Int
        var time: String
        var fault: String?
    }

    var calls: [Call]
}

/// Reads the call log (the oracle) and prints:
/// - the failed calls (429, 5xx, dropped, anything else not 2xx), excluded from the ratio;
/// - the batch sizes of the counted calls and the calls that only carried next-cycle reports;
/// - last: `pdr: <c> calls for <n> accounts (minimum <m>, ratio <c/m>), <a> accounts/s, duplicates <d>, early <e>`.
///
/// Per account, its successful reports in order: the first opens its first cycle; a report less than a cycle after the
/// previous one is *early*; a report of the first cycle other than the first (within a cycle of the first report) is
/// a *duplicate*; a report at least a cycle after the previous one opens the account's next cycle (legitimate).
/// c = successful calls carrying at least one first-cycle report (first or duplicate); successful calls that carried
/// only next-cycle reports are printed separately. accounts/s = distinct accounts reported / time from the first call
/// to the call that completed the first cycle.
func analyze(sandbox: String, cycleSeconds: Double, expected: [(app: String, count: Int)], dueFile: String?) async {
    let answer = await withHTTP { http in
        try await call(http, .GET, sandbox + "/_sandbox/calls", limit: 1 << 30)
    }
    guard answer.status == 200 else { fail("call log: HTTP \(answer.status) \(answer.text)") }
    if let path = ProcessInfo.processInfo.environment["PDR_BENCH_CALL_LOG"], !path.isEmpty {
        do { try answer.body.write(to: URL(fileURLWithPath: path)) } catch { fail("cannot write \(path): \(error)") }
    }
    let log: CallLog
    do { log = try JSONDecoder().decode(CallLog.self, from: answer.body) } catch { fail("call log unreadable: \(error)") }
    let calls = log.calls.sorted { $0.sequence < $1.sequence }
    let expectedApps = Set(expected.map(\.app))
    let cycleMs = Int64((cycleSeconds * 1000).rounded())

    var failedByKind: [String: Int] = [:]
    var failedCalls = 0
    var failedAccounts = 0
    var otherStatuses: [Int: Int] = [:]
    var last: [String: Int64] = [:]
    var firstReport: [String: Int64] = [:]
    var firstPerApp: [String: Int] = [:]
    var duplicates = Set<String>()
    var early = Set<String>()
    var counted = 0
    var countedSizes: [Int] = []
    var nextCycleCalls = 0
    var mixedCalls = 0
    var mixedNextCycleReports = 0
    var firstCallMs: Int64?
    var coverMs: Int64 = 0
    var unknownApp = 0

    for entry in calls {
        guard let clientId = entry.clientId, expectedApps.contains(clientId) else {
            unknownApp += 1
            continue
        }
        guard let date = RFC3339.date(from: entry.time) else { fail("call \(entry.sequence): bad time \(entry.time)") }
        let ms = Int64((date.timeIntervalSince1970 * 1000).rounded())
        if firstCallMs == nil { firstCallMs = ms }
        switch entry.status {
        case 200, 204:
            break
        case 429, 500...599, 0:
            failedCalls += 1
            failedAccounts += entry.accounts.count
            let kind = entry.status == 0 ? "dropped" : entry.status == 429 ? "429" : "5xx"
            failedByKind[kind, default: 0] += 1
            continue
        default:
            otherStatuses[entry.status, default: 0] += 1
            continue
        }
        var firstCycle = false
        var nextCycleReports = 0
        for account in entry.accounts {
            let key = "\(clientId):\(account.accountId)"
            if let previous = last[key] {
                if ms - previous < cycleMs { early.insert(key) }
                if ms - firstReport[key]! < cycleMs {
                    duplicates.insert(key)
                    firstCycle = true
                } else {
                    nextCycleReports += 1
                }
            } else {
                firstReport[key] = ms
                firstPerApp[clientId, default: 0] += 1
                firstCycle = true
                coverMs = ms
            }
            last[key] = ms
        }
        if firstCycle {
            counted += 1
            countedSizes.append(entry.accounts.count)
            if nextCycleReports > 0 {
                mixedCalls += 1
                mixedNextCycleReports += nextCycleReports
            }
        } else {
            nextCycleCalls += 1
        }
    }

    var missing: [String] = []
    for (app, count) in expected where firstPerApp[app, default: 0] != count {
        missing.append("\(app): \(firstPerApp[app, default: 0]) of \(count) reported")
    }
    if !missing.isEmpty { fail("not every account was reported: \(missing.joined(separator: "; "))") }
    if !otherStatuses.isEmpty {
        fail("unexpected PDR answers (not 2xx/429/5xx): \(otherStatuses.sorted { $0.key < $1.key })")
    }

    let n = firstReport.count
    let minimum = expected.reduce(0) { $0 + ($1.count + 89) / 90 }
    let ratio = Double(counted) / Double(minimum)
    let span = Double(coverMs - (firstCallMs ?? coverMs)) / 1000
    let rate = Double(n) / max(span, 1e-9)
    let sorted = countedSizes.sorted()
    let full = countedSizes.filter { $0 == 90 }.count
    let mean = Double(countedSizes.reduce(0, +)) / Double(max(countedSizes.count, 1))
    let kinds = ["429", "5xx", "dropped"].map { "\($0) \(failedByKind[$0, default: 0])" }.joined(separator: ", ")
    print(String(format: "batches counted: %d, mean %.1f accounts, median %d, full (90) %d; first cycle span %.1f s (cycle %.0f s); counted calls also carrying next-cycle reports (counted whole): %d, with %d next-cycle reports; successful calls with next-cycle reports only (not counted): %d; calls of other apps / invalid token: %d",
                 counted, mean, sorted.isEmpty ? 0 : sorted[sorted.count / 2], full, span, cycleSeconds,
                 mixedCalls, mixedNextCycleReports, nextCycleCalls, unknownApp))
    if let dueFile {
        // How late each account's first report came after its first due time (firstSeen + spread × cycle, from the
        // reporter's own registry; sandbox and reporter share the machine's clock).
        guard let text = try? String(contentsOfFile: dueFile, encoding: .utf8) else { fail("cannot read \(dueFile)") }
        var lateness: [Int64] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count == 3, let due = Int64(fields[2]) else { continue }
            if let reported = firstReport["\(fields[0]):\(fields[1])"] { lateness.append(reported - due) }
        }
        lateness.sort()
        if !lateness.isEmpty {
            func at(_ q: Double) -> Double { Double(lateness[min(lateness.count - 1, Int(Double(lateness.count) * q))]) / 1000 }
            let before = lateness.filter { $0 < -1 }.count
            print(String(format: "first report after its first due time (%d accounts): p50 %.2f s, p90 %.2f s, p99 %.2f s, max %.2f s; before it: %d",
                         lateness.count, at(0.5), at(0.9), at(0.99), Double(lateness.last!) / 1000, before))
        }
    }
    print("failed calls (excluded from c): \(failedCalls) (\(kinds)), carrying \(failedAccounts) accounts that were re-sent")
    // The issue's line, then the calls it excludes (429/5xx/dropped: they carried nothing that counted, their accounts
    // were re-sent in a counted call), so the ratio's exclusion is visible in the same line.
    print(String(format: "pdr: %d calls for %d accounts (minimum %d, ratio %.2f), %.0f accounts/s, duplicates %d, early %d",
                 counted, n, minimum, ratio, rate, duplicates.count, early.count)
          + "; \(failedCalls) calls got 429/5xx (excluded from c: \(kinds))")
}

// MARK: main

switch arguments.count > 1 ? arguments[1] : "" {
case "setup" where arguments.count == 7:
    let (gateway, sandbox, admin, internalToken) = (arguments[2], arguments[3], arguments[4], arguments[5])
    guard let apps = Int(arguments[6]), apps > 0 else { fail("bad app count") }
    let run = String(format: "%08x", UInt32.random(in: 0...UInt32.max))
    let lines = await withHTTP { http in
        var lines: [String] = []
        for index in 0..<apps {
            let (app, tenant) = try await setUpApp(http: http, gateway: gateway, sandbox: sandbox, admin: admin,
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
    let apps: [(app: String, tenant: String)] = arguments[6].split(separator: ",").map {
        let parts = $0.split(separator: ":", maxSplits: 1)
        return (String(parts[0]), String(parts.count > 1 ? parts[1] : ""))
    }
    guard !apps.isEmpty, apps.allSatisfy({ !$0.tenant.isEmpty }) else { fail("apps must be appId:tenantId,...") }
    do {
        try await KafkaAdmin(bootstrapServers: bootstrap, logger: logger).ensureTopics([
            TopicSpec(name: topic, partitions: partitions,
                      config: Topics.definition(named: Topics.pdrAccounts)!.kafkaConfig),
        ])
        // updatedAt: when the data was retrieved, spread over the last day (whole milliseconds, as RFC 3339 carries).
        let base = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 - 86_400).rounded())
        var messages: [OutgoingMessage] = []
        messages.reserveCapacity(count)
        for index in 0..<count {
            let (app, tenant) = apps[index % apps.count]
            // 24 lowercase hex characters, Atlassian-style; distinct per index.
            let accountId = String(format: "5be2%04x%016llx", index % apps.count, UInt64(index) &* 0x9e37_79b9_7f4a_7c15)
            let event = AccountHeld(appId: app, accountId: accountId,
                                    updatedAt: base.addingTimeInterval(Double(index % 86_400)), tenantIds: [tenant])
            messages.append(try OutgoingMessage(event: event, topic: topic, key: "\(app):\(accountId)",
                                                source: "lethe/pdr-bench"))
        }
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
        fail("produce: \(error)")
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
    fail("usage: pdr-bench setup <gateway> <sandbox> <admin> <internal> <apps> | produce <bootstrap> <topic> <count> <partitions> <app:tenant,...> | analyze <sandbox> <cycle-seconds> <app:count,...> [<due-file>]")
}
