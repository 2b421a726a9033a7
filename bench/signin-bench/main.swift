import AsyncHTTPClient
import BenchSupport
import Foundation
import NIOCore
import NIOHTTP1

/// `signin-bench <gatewayURL> <sandboxURL> <adminToken> <count> <concurrency> <rate> <seconds>`
///
/// Sets up a tenant with its own app (sandbox + gateway) and 100 sandbox users, then, in this process and on the same
/// machine (a warm-up of 200 of each first, not counted):
/// 1. **Below saturation, open loop**: bare sandbox sequences (authorize → token → /me, what any OAuth client does)
///    at `rate`/s for `seconds`, then complete sign-ins through the gateway (start → sandbox authorize → callback →
///    token endpoint, the OpenID flow) at the same rate for as long. Latency runs from each operation's scheduled start. The gateway's CPU
///    time over the sign-ins (utime + stime from /proc) divided by their number is its CPU per sign-in; the added
///    latency is the sign-ins' p99 minus the sandbox sequences' p99.
/// 2. **Saturation**: `count` sign-ins with `concurrency` in flight: the most this box completes per second, and the
///    CPU per sign-in of each process then (less than below saturation: fewer wake-ups per sign-in).
/// 3. A reference: `count` GETs of the sandbox's /health/live (a Hummingbird hello world).
/// 4. With `BENCH_PERF_DATA` set: one more open-loop phase of sign-ins, with perf recording the gateway (not measured).
/// Before the last line, the CPU per operation of every process (sandbox, gateway, this driver). Last line:
/// `signin: <c> ms gateway CPU per sign-in, added p99 <a> ms at <r>/s open loop, max <m>/s`
@main
struct SignInBench {
    static func main() async throws {
        let arguments = CommandLine.arguments
        guard arguments.count == 8, let count = Int(arguments[4]), let concurrency = Int(arguments[5]),
              let rate = Double(arguments[6]), rate > 0, let seconds = Int(arguments[7]), seconds > 0
        else {
            FileHandle.standardError.write(Data(
                "usage: signin-bench <gatewayURL> <sandboxURL> <adminToken> <count> <concurrency> <rate> <seconds>\n".utf8))
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
            let processes = CPUProbe.processes()
            guard let gateway = processes.first(where: { $0.name == "gateway" }) else {
                throw BenchError(description: "BENCH_PIDS must name the gateway's pid (gateway=<pid>)")
            }
            let figures = try await Figures.measure(
                bench, processes: processes, count: count, concurrency: concurrency, rate: rate, seconds: seconds)
            // BENCH_PERF_DATA=<file>: the gateway's CPU profile over one more open-loop phase of sign-ins at the same
            // rate, after every measured phase, so perf's own load changes none of the figures above.
            if let profiler = try Profiler.start(pid: gateway.pid, seconds: Profiler.seconds(seconds)) {
                _ = try await bench.openLoop(
                    rate: rate, duration: .seconds(Profiler.seconds(seconds)), offset: 3_000_000, bench.signIn)
                try await profiler.finish()
            }
            try await http.shutdown()
            figures.print(rate: rate, seconds: seconds, concurrency: concurrency)
        } catch {
            try? await http.shutdown()
            FileHandle.standardError.write(Data("signin-bench: \(error)\n".utf8))
            exit(1)
        }
    }
}

/// What one run measured, phase by phase (see ``SignInBench``), and how it is printed.
struct Figures {
    var alone: [Double]
    var aloneUsage: (text: String, busyPercent: Int)
    var full: [Double]
    var fullUsage: (text: String, busyPercent: Int)
    var gatewayMs: Double
    var saturated: (rate: Double, p99: Double)
    var saturatedUsage: (text: String, busyPercent: Int)
    var hello: (rate: Double, p99: Double)
    var helloUsage: (text: String, busyPercent: Int)

    /// The open-loop phases (sandbox alone, then sign-ins), saturation, and the hello-world reference.
    static func measure(
        _ bench: Bench, processes: [(name: String, pid: String)], count: Int, concurrency: Int, rate: Double, seconds: Int
    ) async throws -> Figures {
        let duration = Duration.seconds(seconds)
        let aloneCPU = CPUProbe(processes)
        let alone = try await bench.openLoop(rate: rate, duration: duration, bench.sandboxAlone)
        let aloneUsage = aloneCPU.perOperation(alone.count)
        let fullCPU = CPUProbe(processes)
        let full = try await bench.openLoop(rate: rate, duration: duration, offset: 1_000_000, bench.signIn)
        let fullUsage = fullCPU.perOperation(full.count)
        // Read now: a probe counts until it is read, and the phases below would add to it.
        let gatewayMs = fullCPU.milliseconds(of: "gateway") / Double(full.count)
        try LatencyFile.write("signin-alone", alone)
        try LatencyFile.write("signin-full", full)
        // The same sign-ins back to back: what one costs when a wake-up serves many (at 200/s nearly every
        // request wakes a sleeping thread, and the kernel's scheduling shows up in each process's CPU).
        let saturatedCPU = CPUProbe(processes)
        let saturated = try await bench.measure(count, concurrency: concurrency, offset: 2_000_000, bench.signIn)
        let saturatedUsage = saturatedCPU.perOperation(count)
        // A reference in the same setup: the cheapest request a Hummingbird service answers (the sandbox's
        // /health/live, a hello world), to set what one served and one made HTTP request cost on this machine.
        _ = try await bench.measure(200, concurrency: concurrency, bench.helloWorld)
        let helloCPU = CPUProbe(processes)
        let hello = try await bench.measure(count, concurrency: concurrency, bench.helloWorld)
        return Figures(
            alone: alone, aloneUsage: aloneUsage, full: full, fullUsage: fullUsage,
            gatewayMs: gatewayMs, saturated: saturated,
            saturatedUsage: saturatedUsage, hello: hello, helloUsage: helloCPU.perOperation(count))
    }

    /// Where the two cores went, per operation: what the gateway itself costs, and whether the machine (not the
    /// gateway) was the limit; the last line is the record's.
    func print(rate: Double, seconds: Int, concurrency: Int) {
        let (aloneP50, aloneP99) = (Bench.quantile(alone, 0.5), Bench.quantile(alone, 0.99))
        let (fullP50, fullP99) = (Bench.quantile(full, 0.5), Bench.quantile(full, 0.99))
        Swift.print(String(format: "reference: hello world %.0f/s, p99 %.1f ms; ", hello.rate, hello.p99)
            + "cpu ms per request: \(helloUsage.text); machine busy \(helloUsage.busyPercent)%")
        Swift.print(String(format: "open loop at %.0f/s for %d s: sandbox alone p50 %.1f ms, p99 %.1f ms; ", rate, seconds,
                           aloneP50, aloneP99)
            + String(format: "sign-ins p50 %.1f ms, p99 %.1f ms", fullP50, fullP99))
        Swift.print("cpu ms per sandbox sequence: \(aloneUsage.text); machine busy \(aloneUsage.busyPercent)%")
        Swift.print("cpu ms per sign-in: \(fullUsage.text); machine busy \(fullUsage.busyPercent)%")
        Swift.print(String(format: "saturation: %.0f sign-ins/s with %d in flight, p99 %.1f ms", saturated.rate,
                           concurrency, saturated.p99))
        Swift.print("cpu ms per sign-in at saturation: \(saturatedUsage.text); machine busy \(saturatedUsage.busyPercent)%")
        Swift.print(String(
            format: "signin: %.2f ms gateway CPU per sign-in, added p99 %.1f ms at %.0f/s open loop, max %.0f/s",
            gatewayMs, fullP99 - aloneP99, rate, saturated.rate))
    }
}

/// `perf record` attached to a process for one phase, when `BENCH_PERF_DATA` names the output file; it records for as
/// long as its command (`sleep`) runs. Foundation's `Process` passes on the signal mask of the spawning thread, which
/// blocks SIGCHLD, SIGINT and SIGTERM — perf would never see its `sleep` end — so a Python one-liner clears the mask
/// before it execs perf.
struct Profiler {
    let process: Process

    /// The profiled phase: long enough for a few thousand samples, shorter than the measured ones.
    static func seconds(_ measured: Int) -> Int { min(measured, 15) }

    static func start(pid: String, seconds: Int) throws -> Profiler? {
        guard let output = ProcessInfo.processInfo.environment["BENCH_PERF_DATA"], !output.isEmpty else { return nil }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "python3", "-c",
            "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, set()); os.execvp('perf', sys.argv[1:])",
            "perf", "record", "-q", "-F", "499", "-g", "-p", pid, "-o", output, "--", "sleep", String(seconds),
        ]
        try process.run()
        Thread.sleep(forTimeInterval: 0.5) // attached before the phase starts
        return Profiler(process: process)
    }

    /// Waits until perf has written its file (polling: `waitUntilExit` spins a run loop on a core meanwhile).
    func finish() async throws {
        while process.isRunning { try await Task.sleep(for: .milliseconds(100)) }
        guard process.terminationStatus == 0 else {
            throw BenchError(description: "perf record exited with status \(process.terminationStatus)")
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
    /// `Authorization: Basic` with the tenant's client id and secret: how its backend authenticates at the token
    /// endpoint (client_secret_basic).
    var clientAuthorization = ""
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
        var bench = Bench(http: http, gateway: gateway, sandbox: sandbox, appId: app, tenantId: tenant,
                          tenantToken: setup.json(token)["access_token"] as! String)
        bench.clientAuthorization = "Basic " + Data("\(tenant):\(secret)".utf8).base64EncodedString()
        let bearer = jsonType + [("authorization", "Bearer \(bench.tenantToken)")]
        try bench.expect(try await bench.call(.PUT, gateway + "/v1/tenants/\(tenant)/app", headers: bearer,
            body: #"{"clientId":"\#(app)","clientSecret":"\#(appSecret)"}"#), 200, "app")
        try bench.expect(try await bench.call(.PUT, gateway + "/v1/tenants/\(tenant)/settings", headers: bearer,
            body: #"{"returnUrls":["\#(returnURL)"]}"#), 200, "settings")
        return bench
    }

    /// One GET of the sandbox's `/health/live`: a Hummingbird hello world.
    func helloWorld(_: Int) async throws {
        try expect(try await call(.GET, sandbox + "/health/live"), 200, "hello world")
    }

    /// What any OAuth client does against Atlassian alone: authorize (consent), code for tokens, /me.
    func sandboxAlone(_ index: Int) async throws {
        let user = Self.users[index % Self.users.count]
        let redirect = gateway + "/v1/signin/atlassian/callback"
        let authorize = try await call(
            .GET, sandbox + "/authorize?client_id=\(appId)&scope=read%3Ame%20offline_access&redirect_uri="
                + redirect.addingPercentEncoding(withAllowedCharacters: .alphanumerics)! + "&state=s&response_type=code&sandbox_user=\(user)")
        try expect(authorize, 302, "authorize")
        guard let code = Self.queryValue("code", in: authorize.location!) else {
            throw BenchError(description: "authorize: no code in the redirect")
        }
        let token = try await call(.POST, sandbox + "/oauth/token", headers: [("content-type", "application/json")], body: """
            {"grant_type":"authorization_code","client_id":"\(appId)","client_secret":"\(Self.appSecret)","code":"\(code)","redirect_uri":"\(redirect)"}
            """)
        try expect(token, 200, "token")
        let access = json(token)["access_token"] as! String
        try expect(try await call(.GET, sandbox + "/me", headers: [("authorization", "Bearer \(access)")]), 200, "me")
    }

    /// A query parameter's value, percent-decoded: cheaper than URLComponents, which cost the driver more than the
    /// HTTP call it parsed the answer of.
    static func queryValue(_ name: String, in url: String) -> String? {
        guard let query = url.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
        for pair in query.split(separator: "&") where pair.hasPrefix(name + "=") {
            return String(pair.dropFirst(name.count + 1)).removingPercentEncoding
        }
        return nil
    }

    /// RFC 7636 Appendix B's PKCE pair: the gateway checks S256 on every redemption whatever the verifier is.
    static let codeVerifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    static let codeChallenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

    /// A complete sign-in through the gateway's OpenID Provider, as a browser and the tenant's backend do it:
    /// authorization request (PKCE, nonce) → Atlassian's consent → callback → token endpoint (access and ID token).
    func signIn(_ index: Int) async throws {
        let user = Self.users[index % Self.users.count]
        let redirect = Self.returnURL.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        let start = try await call(
            .GET, gateway + "/oauth/authorize?response_type=code&scope=openid%20profile%20email&client_id=\(tenantId)"
                + "&redirect_uri=\(redirect)&state=s\(index)&nonce=n\(index)&code_challenge=\(Self.codeChallenge)"
                + "&code_challenge_method=S256")
        try expect(start, 302, "authorize request")
        let authorize = try await call(.GET, start.location! + "&sandbox_user=\(user)")
        try expect(authorize, 302, "authorize")
        let callback = try await call(.GET, authorize.location!)
        try expect(callback, 302, "callback")
        guard let code = Self.queryValue("code", in: callback.location!) else {
            throw BenchError(description: "callback: no code in \(callback.location!)")
        }
        let token = try await call(
            .POST, gateway + "/oauth/token",
            headers: [("content-type", "application/x-www-form-urlencoded"), ("authorization", clientAuthorization)],
            body: "grant_type=authorization_code&code=\(code)&redirect_uri=\(redirect)&code_verifier=\(Self.codeVerifier)")
        try expect(token, 200, "token")
    }

    /// Open loop: starts operation i at `i / rate` seconds, whatever the earlier ones are doing, for `duration`, and
    /// measures each from its *scheduled* start to its end — a late start counts as latency, so a stall is not hidden
    /// by the requests it kept from being sent (coordinated omission). Returns the latencies in ms, sorted, and the
    /// number of operations started.
    func openLoop(rate: Double, duration: Duration, offset: Int = 0,
                  _ operation: @escaping @Sendable (Int) async throws -> Void) async throws -> [Double] {
        let clock = ContinuousClock()
        let count = Int(rate * Self.milliseconds(duration) / 1000)
        let interval = Duration.nanoseconds(Int64(1e9 / rate))
        let started = clock.now
        return try await withThrowingTaskGroup(of: Double.self) { group in
            for index in 0..<count {
                let scheduled = started + interval * index
                if scheduled > clock.now { try await clock.sleep(until: scheduled) }
                group.addTask {
                    try await operation(offset + index)
                    let elapsed = clock.now - scheduled
                    return Self.milliseconds(elapsed)
                }
            }
            return try await group.reduce(into: [Double]()) { $0.append($1) }.sorted()
        }
    }

    /// A duration in (fractional) milliseconds.
    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    /// The `q` quantile of sorted latencies.
    static func quantile(_ sorted: [Double], _ q: Double) -> Double {
        sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]
    }

    /// Runs `count` operations with `concurrency` in flight: the rate and the 99th percentile latency in ms.
    func measure(_ count: Int, concurrency: Int, offset: Int = 0,
                 _ operation: @escaping @Sendable (Int) async throws -> Void)
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
                        try await operation(offset + index)
                        let elapsed = clock.now - begin
                        mine.append(Self.milliseconds(elapsed))
                        index += concurrency
                    }
                    return mine
                }
            }
            return try await group.reduce(into: [Double]()) { $0 += $1 }.sorted()
        }
        let total = clock.now - started
        let seconds = Self.milliseconds(total) / 1000
        let p99 = latencies[min(latencies.count - 1, Int(Double(latencies.count) * 0.99))]
        return (Double(count) / seconds, p99)
    }
}

/// CPU time of the bench's processes over a phase, from /proc (Linux): `BENCH_PIDS` names the others
/// (`name=pid,…`; bench/signin.sh passes the gateway's and the sandbox's); the driver is this process.
struct CPUProbe {
    let processes: [(name: String, pid: String)]
    let start: [Double]
    let machineStart: (busy: Double, total: Double)

    static func processes() -> [(name: String, pid: String)] {
        let named = (ProcessInfo.processInfo.environment["BENCH_PIDS"] ?? "").split(separator: ",").compactMap {
            pair -> (String, String)? in
            let parts = pair.split(separator: "=")
            return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
        }
        return named + [("driver", String(getpid()))]
    }

    let connectsStart: Double

    init(_ processes: [(name: String, pid: String)]) {
        self.processes = processes
        start = processes.map { ProcessStats.cpuSeconds(pid: Int32($0.pid) ?? 0) }
        machineStart = ProcessStats.machineJiffies()
        connectsStart = Self.tcpConnects()
    }

    /// TCP connections opened by the machine so far (/proc/net/snmp `Tcp: ActiveOpens`): a pool that does not keep
    /// its connections alive shows here.
    static func tcpConnects() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/net/snmp", encoding: .utf8) else { return 0 }
        let lines = text.split(separator: "\n").filter { $0.hasPrefix("Tcp:") }
        guard lines.count == 2 else { return 0 }
        let names = lines[0].split(separator: " "), values = lines[1].split(separator: " ")
        guard let index = names.firstIndex(of: "ActiveOpens"), index < values.count else { return 0 }
        return Double(values[index]) ?? 0
    }

    /// CPU milliseconds the process named `name` spent since the probe started.
    func milliseconds(of name: String) -> Double {
        guard let index = processes.firstIndex(where: { $0.name == name }) else { return 0 }
        return (ProcessStats.cpuSeconds(pid: Int32(processes[index].pid) ?? 0) - start[index]) * 1000
    }

    func perOperation(_ count: Int) -> (text: String, busyPercent: Int) {
        let parts = zip(processes, start).map { process, before in
            let seconds = ProcessStats.cpuSeconds(pid: Int32(process.pid) ?? 0) - before
            return String(format: "%@ %.3f", process.name, seconds * 1000 / Double(count))
        }
        let busy = ProcessStats.machineBusyPercent(since: machineStart)
        let connects = (Self.tcpConnects() - connectsStart) / Double(count)
        return (parts.joined(separator: ", ") + String(format: "; tcp connects %.2f", connects), busy)
    }
}
