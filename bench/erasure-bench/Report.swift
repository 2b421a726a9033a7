import BenchSupport
import Foundation

/// Prints what the run measured; the last line is the one `make bench-erasure` records.
func report(
    _ state: Tracker.State, count: Int, rate: Double, warmupRounds: Int, cpuStart: (Double, Double, Double),
    machineStart: (busy: Double, total: Double), executorPid: Int32, profileStorePid: Int32
) {
    var latencies: [Double] = []
    latencies.reserveCapacity(count)
    for index in 0..<count {
        latencies.append(milliseconds(state.completed[index]! - state.published[index]!))
    }
    try? LatencyFile.write("erasure", latencies)
    printStages(state, count: count, latencies: latencies)
    print("commands received by the bench participants: \(state.commandsReceived) (\(2 * (count + warmupRounds)) without re-sends); duplicate completions \(state.duplicates), unknown \(state.unknown)")
    let firstPublished = state.published.compactMap { $0 }.min()!
    let lastCompleted = state.completed.compactMap { $0 }.max()!
    let span = milliseconds(lastCompleted - firstPublished) / 1000
    let sorted = latencies.sorted()
    let cpu = (
        executor: ProcessStats.cpuSeconds(pid: executorPid) - cpuStart.0,
        profileStore: ProcessStats.cpuSeconds(pid: profileStorePid) - cpuStart.1,
        bench: ProcessStats.cpuSeconds(pid: getpid()) - cpuStart.2)
    // Per erasure: what each process spent on one (the bench process holds the two other participants).
    let perErasure = (executor: cpu.executor * 1000 / Double(count), profileStore: cpu.profileStore * 1000 / Double(count),
                      bench: cpu.bench * 1000 / Double(count))
    // The machine's busy share says whether the latency is the code's or a queue behind saturated cores (the broker
    // and this driver share them).
    print(String(format: "CPU during the run: erasure-executor %.1f s, profile-store %.1f s, erasure-bench %.1f s; "
                 + "per erasure %.2f ms, %.2f ms, %.2f ms; machine busy %d%%", cpu.executor, cpu.profileStore,
                 cpu.bench, perErasure.executor, perErasure.profileStore, perErasure.bench,
                 ProcessStats.machineBusyPercent(since: machineStart)))
    print(String(format: "peak RSS: erasure-executor %.0f MiB, profile-store %.0f MiB, erasure-bench %.0f MiB",
                 Double(ProcessStats.peakRSSKiB(pid: executorPid)) / 1024,
                 Double(ProcessStats.peakRSSKiB(pid: profileStorePid)) / 1024,
                 Double(ProcessStats.peakRSSKiB(pid: getpid())) / 1024))
    print(String(format: "completed at %.0f erasures/s (first status published → last ErasureCompleted)",
                 Double(count) / span))
    print(String(format: "erasure: %d completed, p50 %.0f ms, p99 %.0f ms at %.0f/s, %.2f ms CPU per erasure (executor)",
                 state.completedCount, percentile(sorted, 50), percentile(sorted, 99), rate, perErasure.executor))
}

/// Stages, on the machine's wall clock (every process here reads the same one; ErasureCompleted carries ms):
/// published → first bench participant saw the command → last ack (acked `at`) → executor completedAt; then the
/// participants' outcomes.
func printStages(_ state: Tracker.State, count: Int, latencies: [Double]) {
    var toCommand: [Double] = [], toLastAck: [Double] = [], ackToComplete: [Double] = []
    var profileStoreAck: [Double] = []
    for index in 0..<count {
        guard let published = state.publishedWall[index], let event = state.completedEvents[index] else { continue }
        if let seen = state.commandSeenWall[index] {
            toCommand.append(seen.timeIntervalSince(published) * 1000)
        }
        if let last = event.outcomes.map(\.at).max() {
            toLastAck.append(last.timeIntervalSince(published) * 1000)
            ackToComplete.append(event.completedAt.timeIntervalSince(last) * 1000)
        }
        if let ps = event.outcomes.first(where: { $0.participant == "profile-store" }) {
            profileStoreAck.append(ps.at.timeIntervalSince(published) * 1000)
        }
    }
    func line(_ name: String, _ values: [Double]) -> String {
        let s = values.sorted()
        return String(format: "  %@: p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max %.0f ms (n %d)",
                      name, percentile(s, 50), percentile(s, 90), percentile(s, 99), s.last ?? .nan, s.count)
    }
    var outcomes: [String: Int] = [:]
    for event in state.completedEvents.compactMap({ $0 }) {
        for outcome in event.outcomes { outcomes["\(outcome.participant)=\(outcome.outcome.rawValue)", default: 0] += 1 }
    }
    print("stages (wall clock, from the status's publish):")
    print(line("command reached a bench participant", toCommand))
    print(line("profile-store acked", profileStoreAck))
    print(line("last participant acked", toLastAck))
    print(line("last ack → executor completedAt", ackToComplete))
    print(line("closed → ErasureCompleted read (monotonic)", latencies))
    print("outcomes: " + outcomes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
}
