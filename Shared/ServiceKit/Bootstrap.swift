import Foundation
import Logging
import Metrics
import Prometheus

/// Process-wide set-up that must happen exactly once, in an executable's `main`, never in code tests call repeatedly
/// (swift-log and swift-metrics refuse a second bootstrap).
package enum ServiceBootstrap {
    /// Bootstraps logging to standard error at `LOG_LEVEL` (default `info`) and metrics into a Prometheus registry,
    /// and returns the service's logger and that registry (served on `/metrics`).
    ///
    /// An invalid `LOG_LEVEL` is a configuration error like any other.
    package static func bootstrap(label: String, reader: ConfigReader = ConfigReader()) -> (Logger, PrometheusCollectorRegistry) {
        let level = exitOnConfigError {
            Logger.Level(rawValue: try reader.oneOf(
                "LOG_LEVEL", Logger.Level.allCases.map(\.rawValue), default: "info"))!
        }
        LoggingSystem.bootstrap { name in
            var handler = StreamLogHandler.standardError(label: name)
            handler.logLevel = level
            return handler
        }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return (Logger(label: label), registry)
    }

    /// Runs `body`; a `ConfigError` from it prints its one line to standard error and exits the process with status 1.
    package static func exitOnConfigError<T>(_ body: () throws -> T) -> T {
        do {
            return try body()
        } catch let error as ConfigError {
            exit(saying: error.description)
        } catch {
            exit(saying: "startup error: \(error)")
        }
    }

    /// Runs a service's start step `body` (its build: files, topics, the broker); an error prints one line to standard
    /// error, as `exitOnConfigError` does, and exits with status 1 — not a crash with a backtrace.
    package static func exitOnStartError<T>(
        isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> T
    ) async -> T {
        do {
            return try await body()
        } catch {
            exit(saying: "startup error: \(error)")
        }
    }

    /// Runs a service until it stops (`body` runs its service group). An error that ends it — a replica that lost its
    /// lease, a fatal broker error — prints one line to standard error and exits with status 1 at once.
    ///
    /// Not `main() throws`: an error thrown out of `main` is a crash, and Swift's backtracer symbolicates every thread
    /// before the process ends. On a loaded machine that took over 30 s, during which a replica that had lost its lease
    /// was still a live process holding its ports (the SIGSTOP lease test caught it).
    package static func exitOnRunError(
        isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> Void
    ) async {
        do {
            try await body()
        } catch {
            exit(saying: "stopped: \(error)")
        }
    }

    /// Writes `line` to standard error and ends the process with status 1.
    private static func exit(saying line: String) -> Never {
        FileHandle.standardError.write(Data((line + "\n").utf8))
        Foundation.exit(1)
    }
}
