// swift-tools-version: 6.1
import PackageDescription

let lifecycle: Target.Dependency = .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")
let metrics: Target.Dependency = .product(name: "Metrics", package: "swift-metrics")
let hummingbird: Target.Dependency = .product(name: "Hummingbird", package: "hummingbird")
let prometheus: Target.Dependency = .product(name: "Prometheus", package: "swift-prometheus")
let nioCore: Target.Dependency = .product(name: "NIOCore", package: "swift-nio")
let grdb: Target.Dependency = .product(name: "GRDB", package: "GRDB.swift")
let httpClient: Target.Dependency = .product(name: "AsyncHTTPClient", package: "async-http-client")
let crypto: Target.Dependency = .product(name: "Crypto", package: "swift-crypto")

/// The six executables. Each lives in `Services/<name>/` and depends on Shared modules only,
/// never on another service.
let services: [(name: String, dependencies: [Target.Dependency])] = [
    ("oauth-gateway", [
        "ServiceKit", "ServiceRuntime", "Messaging", "Contracts", "Storage", "ErasureKit", "AtlassianClient", hummingbird, lifecycle,
        logging, metrics, prometheus, grdb, crypto, httpClient, .product(name: "JWTKit", package: "jwt-kit"),
    ]),
    ("profile-store", [
        "ServiceKit", "ServiceRuntime", "Messaging", "Contracts", "Storage", "ErasureKit", hummingbird, lifecycle, logging, metrics,
        prometheus, .product(name: "GRDB", package: "GRDB.swift"),
    ]),
    ("pdr-reporter", [
        "ServiceKit", "ServiceRuntime", "Messaging", "Contracts", "AtlassianClient", "Storage", "ErasureKit", hummingbird, lifecycle, logging,
        prometheus, metrics, nioCore, grdb, .product(name: "NIOHTTP1", package: "swift-nio"), httpClient,
    ]),
    ("erasure-executor", [
        "ServiceKit", "ServiceRuntime", "Messaging", "Contracts", "Storage", "ErasureKit", hummingbird, lifecycle, logging, prometheus,
        metrics, grdb, crypto, httpClient,
    ]),
    ("operator-console", [
        "ServiceKit", "ServiceRuntime", "Messaging", "Contracts", hummingbird, lifecycle, logging, prometheus, crypto,
        httpClient, .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "HTTPTypes", package: "swift-http-types"),
    ]),
    ("atlassian-sandbox", [
        "ServiceKit", "Contracts", hummingbird, prometheus, logging, nioCore,
        .product(name: "HTTPTypes", package: "swift-http-types"),
    ]),
]

/// Builds a service's executable target from its folder under `Services/`.
func makeServiceTarget(name: String, dependencies: [Target.Dependency]) -> Target {
    .executableTarget(name: name, dependencies: dependencies, path: "Services/\(name)")
}


let package = Package(
    name: "lethe",
    platforms: [.macOS(.v15)],
    products: services.map { .executable(name: $0.name, targets: [$0.name]) },
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        // Already resolved through Hummingbird and AsyncHTTPClient; named so their modules can be imported directly.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
        // jwt-kit 5 needs swift-crypto 4; named for HMAC, SHA-256 and signatures in the erasure audit, and the
        // suppression digests of ErasureKit.
        .package(url: "https://github.com/apple/swift-crypto.git", "4.0.0"..<"5.0.0"),
    ],
    targets: services.map { makeServiceTarget(name: $0.name, dependencies: $0.dependencies) } + [
        // MARK: Shared modules
        .systemLibrary(
            name: "CRdKafka",
            path: "Shared/CRdKafka",
            pkgConfig: "rdkafka",
            providers: [.apt(["librdkafka-dev"])]
        ),
        .target(name: "Contracts", path: "Shared/Contracts"),
        .target(
            name: "Messaging",
            dependencies: ["CRdKafka", "Contracts", lifecycle, logging, metrics],
            path: "Shared/Messaging"
        ),
        .target(
            name: "ServiceKit",
            dependencies: [
                "Contracts", hummingbird, prometheus, lifecycle, logging, metrics, nioCore,
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "JWTKit", package: "jwt-kit"), crypto,
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            path: "Shared/ServiceKit"
        ),

        .target(
            name: "ServiceRuntime",
            dependencies: [
                "ServiceKit", "Messaging", "Contracts", "ErasureKit", hummingbird, prometheus, lifecycle, logging, metrics,
                httpClient, nioCore, .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            path: "Shared/ServiceRuntime"
        ),
        .target(
            name: "Storage",
            dependencies: [.product(name: "GRDB", package: "GRDB.swift"), "Messaging", lifecycle, logging],
            path: "Shared/Storage"
        ),
        .target(
            name: "ErasureKit",
            dependencies: ["Messaging", "Contracts", lifecycle, logging, metrics, crypto],
            path: "Shared/ErasureKit"
        ),
        .target(
            name: "AtlassianClient",
            dependencies: [
                "Contracts", .product(name: "AsyncHTTPClient", package: "async-http-client"), logging, nioCore,
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Shared/AtlassianClient"
        ),

        // MARK: Tools run by tests and benchmarks
        .target(name: "BenchSupport", path: "bench/BenchSupport"),
        .executableTarget(
            name: "kafka-test-consumer",
            dependencies: ["Messaging", "ServiceKit", lifecycle, logging],
            path: "Tests/Executables/kafka-test-consumer"
        ),
        .executableTarget(
            name: "ingest-bench",
            dependencies: [
                "Messaging", "Contracts", "BenchSupport", .product(name: "GRDB", package: "GRDB.swift"), lifecycle,
                logging,
            ],
            path: "bench/ingest-bench"
        ),
        .executableTarget(
            name: "erasure-bench",
            dependencies: ["Messaging", "Contracts", "ErasureKit", "BenchSupport", lifecycle, logging],
            path: "bench/erasure-bench"
        ),
        .executableTarget(
            name: "pdr-bench",
            dependencies: [
                "Messaging", "Contracts", lifecycle, logging, httpClient, nioCore,
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "bench/pdr-bench"
        ),
        .executableTarget(
            name: "signin-bench",
            dependencies: ["BenchSupport", httpClient, nioCore, .product(name: "NIOHTTP1", package: "swift-nio")],
            path: "bench/signin-bench"
        ),
        .executableTarget(
            name: "messaging-bench",
            dependencies: ["Messaging", lifecycle, logging],
            path: "bench/messaging-bench"
        ),

        // MARK: Tests
        .target(
            name: "TestSupport",
            dependencies: [
                "Messaging", "ServiceKit", lifecycle, logging, hummingbird, nioCore,
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "AtlassianClientTests",
            dependencies: [
                "AtlassianClient", "atlassian-sandbox", "ServiceKit", "Contracts", "TestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"), httpClient,
                .product(name: "Prometheus", package: "swift-prometheus"), lifecycle,
            ]
        ),
        .testTarget(name: "ContractsTests", dependencies: ["Contracts"]),
        .testTarget(
            name: "StorageTests",
            dependencies: [
                "Storage", "Messaging", "TestSupport", .product(name: "GRDB", package: "GRDB.swift"), lifecycle,
            ]
        ),
        .testTarget(
            name: "ErasureKitTests", dependencies: ["ErasureKit", "Messaging", "Contracts", "TestSupport", lifecycle]
        ),
        .testTarget(
            name: "ProfileStoreTests",
            dependencies: [
                "profile-store", "Storage", "ErasureKit", "Messaging", "Contracts", "ServiceKit", "TestSupport",
                .product(name: "GRDB", package: "GRDB.swift"), lifecycle, logging, prometheus, hummingbird,
                .product(name: "HummingbirdTesting", package: "hummingbird"), httpClient,
            ]
        ),
        .testTarget(
            name: "ErasureExecutorTests",
            dependencies: [
                "erasure-executor", "ErasureKit", "Storage", "Messaging", "Contracts", "ServiceKit", "TestSupport",
                lifecycle, logging, hummingbird, grdb, httpClient, crypto,
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]
        ),
        .testTarget(
            name: "OAuthGatewayTests",
            dependencies: [
                "oauth-gateway", "AtlassianClient", "Contracts", "Messaging", "ServiceKit", "Storage", "TestSupport",
                lifecycle, logging, prometheus, grdb, httpClient, .product(name: "JWTKit", package: "jwt-kit"),
                hummingbird, .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ]
        ),
        .testTarget(
            name: "OperatorConsoleTests",
            dependencies: [
                "operator-console", "Contracts", "Messaging", "ServiceKit", "TestSupport", hummingbird, httpClient, logging,
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]
        ),
        .testTarget(
            name: "PDRReporterTests",
            dependencies: [
                "pdr-reporter", "AtlassianClient", "Contracts", "Messaging", "ServiceKit", "TestSupport", "Storage",
                lifecycle, logging, hummingbird, grdb, nioCore, .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        .testTarget(
            name: "MessagingTests", dependencies: ["Messaging", "Contracts", "ServiceKit", "TestSupport", lifecycle, logging]
        ),
        .testTarget(
            name: "ServiceKitTests",
            dependencies: [
                "ServiceKit", "ServiceRuntime", "Contracts", "TestSupport", "Messaging", hummingbird, prometheus, lifecycle,
                logging, nioCore,
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
