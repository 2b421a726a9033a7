import Contracts
import Foundation

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

/// What the call log adds up to, by the rules of ``analyze(sandbox:cycleSeconds:expected:dueFile:)``.
struct CallTally {
    let cycleMs: Int64
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

    /// Adds one call of an expected app, made at `ms` (epoch milliseconds).
    mutating func add(_ entry: CallLog.Call, clientId: String, at ms: Int64) {
        if firstCallMs == nil { firstCallMs = ms }
        switch entry.status {
        case 200, 204:
            break
        case 429, 500...599, 0:
            failedCalls += 1
            failedAccounts += entry.accounts.count
            let kind = entry.status == 0 ? "dropped" : entry.status == 429 ? "429" : "5xx"
            failedByKind[kind, default: 0] += 1
            return
        default:
            otherStatuses[entry.status, default: 0] += 1
            return
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
    let calls = await fetchCallLog(sandbox: sandbox)
    let expectedApps = Set(expected.map(\.app))
    var tally = CallTally(cycleMs: Int64((cycleSeconds * 1000).rounded()))
    for entry in calls {
        guard let clientId = entry.clientId, expectedApps.contains(clientId) else {
            tally.unknownApp += 1
            continue
        }
        guard let date = RFC3339.date(from: entry.time) else { fail("call \(entry.sequence): bad time \(entry.time)") }
        tally.add(entry, clientId: clientId, at: Int64((date.timeIntervalSince1970 * 1000).rounded()))
    }

    var missing: [String] = []
    for (app, count) in expected where tally.firstPerApp[app, default: 0] != count {
        missing.append("\(app): \(tally.firstPerApp[app, default: 0]) of \(count) reported")
    }
    if !missing.isEmpty { fail("not every account was reported: \(missing.joined(separator: "; "))") }
    if !tally.otherStatuses.isEmpty {
        fail("unexpected PDR answers (not 2xx/429/5xx): \(tally.otherStatuses.sorted { $0.key < $1.key })")
    }

    let n = tally.firstReport.count
    let minimum = expected.reduce(0) { $0 + ($1.count + 89) / 90 }
    let ratio = Double(tally.counted) / Double(minimum)
    let span = Double(tally.coverMs - (tally.firstCallMs ?? tally.coverMs)) / 1000
    let rate = Double(n) / max(span, 1e-9)
    let sorted = tally.countedSizes.sorted()
    let full = tally.countedSizes.filter { $0 == 90 }.count
    let mean = Double(tally.countedSizes.reduce(0, +)) / Double(max(tally.countedSizes.count, 1))
    let kinds = ["429", "5xx", "dropped"].map { "\($0) \(tally.failedByKind[$0, default: 0])" }.joined(separator: ", ")
    print(String(format: "batches counted: %d, mean %.1f accounts, median %d, full (90) %d; first cycle span %.1f s (cycle %.0f s); counted calls also carrying next-cycle reports (counted whole): %d, with %d next-cycle reports; successful calls with next-cycle reports only (not counted): %d; calls of other apps / invalid token: %d",
                 tally.counted, mean, sorted.isEmpty ? 0 : sorted[sorted.count / 2], full, span, cycleSeconds,
                 tally.mixedCalls, tally.mixedNextCycleReports, tally.nextCycleCalls, tally.unknownApp))
    if let dueFile { printLateness(dueFile: dueFile, firstReport: tally.firstReport) }
    print("failed calls (excluded from c): \(tally.failedCalls) (\(kinds)), carrying \(tally.failedAccounts) accounts that were re-sent")
    // The issue's line, then the calls it excludes (429/5xx/dropped: they carried nothing that counted, their accounts
    // were re-sent in a counted call), so the ratio's exclusion is visible in the same line.
    print(String(format: "pdr: %d calls for %d accounts (minimum %d, ratio %.2f), %.0f accounts/s, duplicates %d, early %d",
                 tally.counted, n, minimum, ratio, rate, tally.duplicates.count, tally.early.count)
          + "; \(tally.failedCalls) calls got 429/5xx (excluded from c: \(kinds))")
}

/// The sandbox's PDR call log, in call order; also written to `PDR_BENCH_CALL_LOG` when that is set.
func fetchCallLog(sandbox: String) async -> [CallLog.Call] {
    let answer = await withHTTP { http in
        try await call(http, .GET, sandbox + "/_sandbox/calls", limit: 1 << 30)
    }
    guard answer.status == 200 else { fail("call log: HTTP \(answer.status) \(answer.text)") }
    if let path = ProcessInfo.processInfo.environment["PDR_BENCH_CALL_LOG"], !path.isEmpty {
        do { try answer.body.write(to: URL(fileURLWithPath: path)) } catch { fail("cannot write \(path): \(error)") }
    }
    let log: CallLog
    do { log = try JSONDecoder().decode(CallLog.self, from: answer.body) } catch { fail("call log unreadable: \(error)") }
    return log.calls.sorted { $0.sequence < $1.sequence }
}

/// How late each account's first report came after its first due time (firstSeen + spread × cycle, from the
/// reporter's own registry; sandbox and reporter share the machine's clock).
func printLateness(dueFile: String, firstReport: [String: Int64]) {
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
