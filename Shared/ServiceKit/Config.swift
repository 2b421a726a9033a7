import Contracts
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A configuration value that is missing or unusable. Its description is the one line a process prints before it
/// exits with status 1, and it names the variable so an operator knows what to fix. It never contains the value:
/// the variable may hold a secret.
package struct ConfigError: Error, CustomStringConvertible, Equatable {
    /// The environment variable at fault.
    package var variable: String
    /// What is wrong with it, in words an operator understands.
    package var reason: String

    package init(variable: String, reason: String) {
        self.variable = variable
        self.reason = reason
    }

    package var description: String { "configuration error: \(variable) \(reason)" }
}

/// Reads settings from environment variables, each validated as it is read.
///
/// Every component declares its settings in a `…Config` struct whose throwing init uses one of these readers, so the
/// whole configuration is checked once, at start, and nothing reads the environment deep inside the code. Tests pass
/// a dictionary instead of the process environment.
package struct ConfigReader: Sendable {
    private let environment: [String: String]

    /// - Parameter environment: the variables to read; the process environment by default.
    package init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.environment = environment
    }

    /// The raw value, or nil when the variable is unset or empty (an empty value counts as unset, which is what a
    /// compose file's `VAR=` means).
    package func optionalString(_ name: String) -> String? {
        guard let value = environment[name]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        return value
    }

    /// A string that must be set.
    package func requiredString(_ name: String) throws -> String {
        guard let value = optionalString(name) else { throw ConfigError(variable: name, reason: "is required but not set") }
        return value
    }

    /// A string with a default.
    package func string(_ name: String, default defaultValue: String) -> String {
        optionalString(name) ?? defaultValue
    }

    /// A secret that must be set, at least `minimumLength` characters long, and not an example's placeholder. The
    /// value is never echoed.
    package func secret(_ name: String, minimumLength: Int = 16) throws -> String {
        let value = try requiredString(name)
        guard value.count >= minimumLength else {
            throw ConfigError(variable: name, reason: "must be at least \(minimumLength) characters long")
        }
        guard !Self.isPlaceholder(value) else {
            throw ConfigError(
                variable: name,
                reason: "is a placeholder from an example file; set a random value (openssl rand -base64 32)")
        }
        return value
    }

    /// Whether a secret is still the example's: compose/.env.example marks every secret `change-me-…`, so a
    /// deployment that copied the file without replacing one refuses to start instead of running with a published
    /// credential.
    package static func isPlaceholder(_ value: String) -> Bool {
        let lowered = value.lowercased()
        return ["change-me", "changeme", "change_me", "replace-me"].contains { lowered.contains($0) }
    }

    /// An integer within `range`, or the default when unset.
    package func int(_ name: String, default defaultValue: Int, range: ClosedRange<Int> = Int.min...Int.max) throws -> Int {
        guard let raw = optionalString(name) else { return defaultValue }
        guard let value = Int(raw) else { throw ConfigError(variable: name, reason: "must be an integer") }
        guard range.contains(value) else {
            throw ConfigError(variable: name, reason: "must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return value
    }

    /// A boolean (`true`/`false`/`1`/`0`/`yes`/`no`), or the default when unset.
    package func bool(_ name: String, default defaultValue: Bool) throws -> Bool {
        guard let raw = optionalString(name)?.lowercased() else { return defaultValue }
        switch raw {
        case "true", "1", "yes": return true
        case "false", "0", "no": return false
        default: throw ConfigError(variable: name, reason: "must be true or false")
        }
    }

    /// An absolute http(s) URL, or the default when unset.
    package func url(_ name: String, default defaultValue: String? = nil) throws -> URL {
        guard let raw = optionalString(name) ?? defaultValue else {
            throw ConfigError(variable: name, reason: "is required but not set")
        }
        guard let url = URL(string: raw), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme),
              url.host != nil
        else { throw ConfigError(variable: name, reason: "must be an absolute http or https URL") }
        return url
    }

    /// One of a fixed set of values, or the default when unset.
    package func oneOf(_ name: String, _ allowed: [String], default defaultValue: String) throws -> String {
        let value = optionalString(name) ?? defaultValue
        guard allowed.contains(value) else {
            throw ConfigError(variable: name, reason: "must be one of \(allowed.joined(separator: ", "))")
        }
        return value
    }
}

/// Where a service's HTTP servers listen: `HTTP_HOST` (default 127.0.0.1 — a service is only reachable from
/// elsewhere when the operator says so, as compose does with 0.0.0.0), `HTTP_PORT` (the service's default port) and
/// `HTTP_INTERNAL_PORT`: the internal listener, which serves `/metrics` and the service's internal routes so that they
/// are never reachable through the public port (unset: one listener serves everything; the gateway always has one).
/// `HTTP_ADVERTISED_HOST`: the host the other replicas of the service reach this one at (see ``advertisedHost``).
package struct HTTPServerConfig: Sendable, Equatable {
    package var host: String
    package var port: Int
    package var internalPort: Int?
    /// `HTTP_ADVERTISED_HOST`, when set.
    package var advertisedHostSetting: String?

    package init(host: String, port: Int, internalPort: Int? = nil, advertisedHost: String? = nil) {
        self.host = host
        self.port = port
        self.internalPort = internalPort
        self.advertisedHostSetting = advertisedHost
    }

    /// The host another replica of the service reaches this one at (a standby forwards requests to the active replica
    /// there): `HTTP_ADVERTISED_HOST`; else `HTTP_HOST` when it names one address; else, listening on every address
    /// (`0.0.0.0`, compose), the address this machine's host name resolves to — a container's own address in Docker
    /// and Kubernetes, which write it into `/etc/hosts` — or the host name itself when it does not resolve.
    package var advertisedHost: String {
        if let advertisedHostSetting { return advertisedHostSetting }
        guard ["0.0.0.0", "::", "[::]", ""].contains(host) else { return host }
        let name = ProcessInfo.processInfo.hostName
        return Self.address(of: name) ?? name
    }

    /// The first non-loopback IPv4 address `name` resolves to (IPv6 when it has none), as text.
    private static func address(of name: String) -> String? {
        var hints = addrinfo()
        #if canImport(Glibc)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, nil, &hints, &list) == 0, let list else { return nil }
        defer { freeaddrinfo(list) }
        var found: [(family: Int32, text: String)] = []
        var entry: UnsafeMutablePointer<addrinfo>? = list
        while let current = entry?.pointee {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(current.ai_addr, current.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 {
                found.append((current.ai_family, String(cString: buffer)))
            }
            entry = current.ai_next
        }
        let usable = found.filter { !$0.text.hasPrefix("127.") && $0.text != "::1" }
        let chosen = usable.first { $0.family == AF_INET } ?? usable.first
        return chosen.map { $0.family == AF_INET6 ? "[\($0.text)]" : $0.text }
    }

    package init(reader: ConfigReader, defaultPort: Int, defaultInternalPort: Int? = nil) throws {
        self.host = reader.string("HTTP_HOST", default: "127.0.0.1")
        self.advertisedHostSetting = reader.optionalString("HTTP_ADVERTISED_HOST")
        // Port 0 asks the system for a free port, which tests use.
        self.port = try reader.int("HTTP_PORT", default: defaultPort, range: 0...65535)
        if reader.optionalString("HTTP_INTERNAL_PORT") != nil || defaultInternalPort != nil {
            let internalPort = try reader.int("HTTP_INTERNAL_PORT", default: defaultInternalPort ?? 0, range: 0...65535)
            if internalPort == port, port != 0 {
                throw ConfigError(variable: "HTTP_INTERNAL_PORT", reason: "must differ from HTTP_PORT")
            }
            self.internalPort = internalPort
        }
    }
}

/// Settings every service that talks to Kafka shares: `KAFKA_BOOTSTRAP_SERVERS` (required, `host:port[,host:port]`),
/// `KAFKA_TOPIC_PARTITIONS` (default 12: the partition count of every topic; co-partitioned topics depend on it) and
/// `KAFKA_CREATE_TOPICS` (default true: a service creates the topics it uses at start; false: the operator
/// provisions them, and a service only checks that they exist with that partition count) and `KAFKA_FETCH_WAIT_MS`
/// (default 500, librdkafka's: how long a consumer's fetch may wait at the broker; on Apache Kafka it only bounds idle
/// polling, on a broker that holds fetches for their whole wait — the Tansu dev broker — it is added to every hop,
/// and a lower value trades that broker's CPU for latency; see `KafkaConsumerConfig.fetchMaxWait`).
package struct KafkaSettings: Sendable, Equatable {
    package var bootstrapServers: String
    package var topicPartitions: Int
    package var createTopics: Bool
    package var fetchMaxWait: Duration

    package init(
        bootstrapServers: String, topicPartitions: Int = 12, createTopics: Bool = true,
        fetchMaxWait: Duration = .milliseconds(500)
    ) {
        self.bootstrapServers = bootstrapServers
        self.topicPartitions = topicPartitions
        self.createTopics = createTopics
        self.fetchMaxWait = fetchMaxWait
    }

    package init(reader: ConfigReader) throws {
        let servers = try reader.requiredString("KAFKA_BOOTSTRAP_SERVERS")
        let valid = servers.split(separator: ",").allSatisfy { entry in
            let parts = entry.trimmingCharacters(in: .whitespaces).split(separator: ":")
            return parts.count == 2 && !parts[0].isEmpty && Int(parts[1]).map { (1...65535).contains($0) } == true
        }
        guard valid else {
            throw ConfigError(variable: "KAFKA_BOOTSTRAP_SERVERS", reason: "must be a comma-separated list of host:port")
        }
        self.bootstrapServers = servers
        self.topicPartitions = try reader.int("KAFKA_TOPIC_PARTITIONS", default: 12, range: 1...1000)
        self.createTopics = try reader.bool("KAFKA_CREATE_TOPICS", default: true)
        self.fetchMaxWait = .milliseconds(try reader.int("KAFKA_FETCH_WAIT_MS", default: 500, range: 1...10_000))
    }
}

/// `LETHE_DATA_DIR`: where a service keeps its SQLite file. Created at start when missing.
package struct DataDirectory: Sendable, Equatable {
    package var url: URL

    package init(url: URL) { self.url = url }

    package init(reader: ConfigReader) throws {
        let path = reader.string("LETHE_DATA_DIR", default: "./.run/data")
        let url = URL(fileURLWithPath: path, isDirectory: true)
        do {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        } catch {
            throw ConfigError(variable: "LETHE_DATA_DIR", reason: "is not a usable directory (\(path))")
        }
        self.url = url
    }

    /// The SQLite file of the named service inside the data directory.
    package func databaseFile(_ name: String) -> URL { url.appendingPathComponent("\(name).sqlite") }
}

/// The settings every Kafka-backed Lethe service reads: where it listens, the broker, its data directory, and the
/// namespace of its topics and consumer groups.
package struct StandardServiceConfig: Sendable, Equatable {
    package var http: HTTPServerConfig
    package var kafka: KafkaSettings
    package var dataDirectory: DataDirectory
    package var namespace: TopicNamespace

    package init(reader: ConfigReader, defaultPort: Int, defaultInternalPort: Int? = nil) throws {
        self.http = try HTTPServerConfig(reader: reader, defaultPort: defaultPort, defaultInternalPort: defaultInternalPort)
        self.kafka = try KafkaSettings(reader: reader)
        self.dataDirectory = try DataDirectory(reader: reader)
        self.namespace = try TopicNamespace(reader: reader)
    }

    /// Every topic, inside the namespace.
    package var topics: LetheTopics { LetheTopics(namespace: namespace.prefix) }

    /// A consumer group id inside the namespace, like the topics (`<ns>.profile-store`).
    package func group(_ name: String) -> String { namespace.name(name) }
}

/// `LETHE_TOPIC_NAMESPACE`: a prefix for every topic and consumer group id (`<ns>.lethe.profiles.v1`). Unset in
/// production (the architecture's names); tests and benchmarks set a unique one so runs sharing a broker never see
/// each other's records.
package struct TopicNamespace: Sendable, Equatable {
    package var prefix: String?

    package init(prefix: String?) { self.prefix = prefix }

    package init(reader: ConfigReader) throws {
        let prefix = reader.optionalString("LETHE_TOPIC_NAMESPACE")
        if let prefix, prefix.contains(where: { !($0.isLetter || $0.isNumber || "-_.".contains($0)) }) {
            throw ConfigError(
                variable: "LETHE_TOPIC_NAMESPACE", reason: "may contain only letters, digits, '-', '_', '.'")
        }
        self.prefix = prefix
    }

    /// `name` (a topic or group id) inside this namespace.
    package func name(_ name: String) -> String { prefix.map { "\($0).\(name)" } ?? name }
}
