import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What the benchmarks read about a process from `/proc` (Linux): CPU time and peak memory. CPU time per operation is
/// steadier than latency when other work shares the cores — it does not grow when others take them.
package enum ProcessStats {
    /// User + system CPU time of `pid` so far, in seconds; 0 when unreadable.
    package static func cpuSeconds(pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let end = stat.lastIndex(of: ")")
        else { return 0 }
        // Fields after the command name (which may hold spaces and parentheses): state is field 3, utime 14,
        // stime 15 (proc(5)).
        let fields = stat[stat.index(after: end)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// VmHWM (peak resident set) of `pid`, in kB; 0 when unreadable.
    package static func peakRSSKiB(pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
        else { return 0 }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0") ?? 0
    }

    /// Busy and total jiffies of the whole machine so far (/proc/stat's first line; idle and iowait are not busy).
    package static func machineJiffies() -> (busy: Double, total: Double) {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = text.split(separator: "\n").first
        else { return (0, 0) }
        let values = line.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard values.count >= 5 else { return (0, 0) }
        let total = values.reduce(0, +)
        return (total - values[3] - values[4], total)
    }

    /// The share of the machine's CPU time that was busy since `start` (a ``machineJiffies()`` reading), in percent.
    package static func machineBusyPercent(since start: (busy: Double, total: Double)) -> Int {
        let now = machineJiffies()
        guard now.total > start.total else { return 0 }
        return Int(((now.busy - start.busy) / (now.total - start.total) * 100).rounded())
    }
}

/// Where a bench leaves its raw latencies for `bench/cdf-svg`: `$BENCH_LATENCY_DIR/<name>.txt`, one value in ms per
/// line; nothing when the variable is unset.
package enum LatencyFile {
    package static func write(_ name: String, _ latencies: [Double]) throws {
        guard let directory = ProcessInfo.processInfo.environment["BENCH_LATENCY_DIR"], !directory.isEmpty else { return }
        let text = latencies.map { String(format: "%.3f", $0) }.joined(separator: "\n") + "\n"
        try text.write(toFile: "\(directory)/\(name).txt", atomically: true, encoding: .utf8)
    }
}
