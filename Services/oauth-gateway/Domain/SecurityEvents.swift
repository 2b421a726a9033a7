import Contracts
import Crypto
import Foundation
import JWTKit
import ServiceKit

/// The gateway as an OpenID Shared Signals Framework 1.0 transmitter (docs/shared-signals.md): each tenant configures
/// one stream with its tenant token, and receives Security Event Tokens (RFC 8417) about its users — signed with the
/// gateway's keys (the JWKS of its ID tokens), the user named as in the ID token (`iss` + `sub`), never by name or
/// email.
enum SecurityEvents {
    /// The event types a stream may ask for, by URI (RISC 1.0 and SSF 1.0).
    enum EventType: String, CaseIterable, Sendable {
        /// An erasure of the user's data opened at Atlassian's `closed` answer or a request: the user must not be
        /// signed in meanwhile.
        case accountDisabled = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
        /// The erasure completed: the tenant must erase what it stored of the user (its name and email from the ID
        /// token) under its policy.
        case accountPurged = "https://schemas.openid.net/secevent/risc/event-type/account-purged"
        /// Atlassian answered `updated` for the user and the refreshed profile differs in `changed_fields` (names,
        /// never values): the tenant refreshes what it copied from the ID token (sign the user in again, or read
        /// userinfo). Lethe's own URI: CAEP's `token-claims-change` would carry the new values, personal data.
        case profileChanged = "urn:lethe:secevent:event-type:profile-changed"
        /// Answers a verification request (always delivered, whatever the stream asked for).
        case verification = "https://schemas.openid.net/secevent/ssf/event-type/verification"
        /// The stream's status changed (always delivered).
        case streamUpdated = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"

        /// What a receiver may request; the others are delivered to every stream.
        static let requestable: [EventType] = [.accountDisabled, .accountPurged, .profileChanged]
    }

    /// `urn:ietf:rfc:8935` (the gateway POSTs each SET to the receiver) and `urn:ietf:rfc:8936` (the receiver polls).
    enum DeliveryMethod: String, Sendable, Codable {
        case push = "urn:ietf:rfc:8935"
        case poll = "urn:ietf:rfc:8936"
    }

    enum StreamStatus: String, Sendable, Codable {
        /// Events are queued and delivered.
        case enabled
        /// Events are queued but held until the stream is enabled again.
        case paused
        /// Events are not even queued.
        case disabled
    }

    /// The path of the poll endpoint of a stream (RFC 8936), under the issuer.
    static let pollPath = "/ssf/poll"

    /// What a stream's push `Authorization` header is sealed with (``SecretBox``).
    static func authorizationContext(streamId: String) -> String { "ssf_stream:\(streamId):authorization_header" }
}

/// RFC 9493 subject identifier: a user as the tenant knows it from its ID token (`iss_sub`), or a stream (`opaque`).
struct SubjectIdentifier: Codable, Equatable, Sendable {
    var format: String
    var iss: String?
    var sub: String?
    var id: String?

    static func user(_ userId: String, issuer: String) -> SubjectIdentifier {
        SubjectIdentifier(format: "iss_sub", iss: issuer, sub: userId, id: nil)
    }

    static func stream(_ streamId: String) -> SubjectIdentifier {
        SubjectIdentifier(format: "opaque", iss: nil, sub: nil, id: streamId)
    }
}

/// One event's members. Every member is optional: each event type uses its own, and none carries personal data.
struct SecurityEventPayload: Codable, Equatable, Sendable {
    /// Verification: the `state` the receiver sent.
    var state: String?
    /// Stream updated: the new status and why.
    var status: String?
    var reason: String?
    /// Account disabled and purged (Lethe's members): the erasure's policy and cause, as the erasure API shows them.
    var policy: String?
    var cause: String?
    /// The event's time, seconds since the epoch (SSF's `event_timestamp`).
    var eventTimestamp: Int?
    /// Profile changed: which of the profile's fields changed (`name`, `email`, `nickname`, `picture`); absent when
    /// the gateway had nothing to compare with (a sign-in from before it kept digests).
    var changedFields: [String]?

    enum CodingKeys: String, CodingKey {
        case state, status, reason, policy, cause
        case eventTimestamp = "event_timestamp"
        case changedFields = "changed_fields"
    }
}

/// A Security Event Token's claims (RFC 8417 §2.2, SSF 1.0 §4): one event per token. `iat` is set when the token is
/// signed, which is at each delivery: queued events keep only their claims, so a signing key rotated or revoked
/// meanwhile never leaves an undeliverable token behind.
struct SecurityEventClaims: JWTPayload, Equatable, Sendable {
    var iss: String
    var jti: String
    var iat: Int
    var aud: String
    /// The erasure a user event belongs to: a receiver can tie `account-disabled` and `account-purged` together.
    var txn: String?
    var subId: SubjectIdentifier
    var events: [String: SecurityEventPayload]

    enum CodingKeys: String, CodingKey {
        case iss, jti, iat, aud, txn, events
        case subId = "sub_id"
    }

    func verify(using algorithm: some JWTAlgorithm) async throws {}

    /// A new event's claims: a random `jti`, `iat` 0 until signed.
    static func make(
        _ type: SecurityEvents.EventType, payload: SecurityEventPayload, subject: SubjectIdentifier, audience: String,
        issuer: String, txn: String?
    ) -> SecurityEventClaims {
        SecurityEventClaims(
            iss: issuer, jti: OneTimeValue.make(), iat: 0, aud: audience, txn: txn, subId: subject,
            events: [type.rawValue: payload])
    }
}

/// A stream as a receiver configures it and the transmitter describes it (SSF 1.0 §8.1.1).
struct StreamConfiguration: Codable, Equatable, Sendable {
    struct Delivery: Codable, Equatable, Sendable {
        var method: String
        var endpointUrl: String?
        /// Sent as the `Authorization` header of each push; never shown back.
        var authorizationHeader: String?

        init(method: String, endpointUrl: String? = nil, authorizationHeader: String? = nil) {
            self.method = method
            self.endpointUrl = endpointUrl
            self.authorizationHeader = authorizationHeader
        }

        enum CodingKeys: String, CodingKey {
            case method
            case endpointUrl = "endpoint_url"
            case authorizationHeader = "authorization_header"
        }
    }

    var streamId: String
    var iss: String
    var aud: String
    var eventsSupported: [String]
    var eventsRequested: [String]
    var eventsDelivered: [String]
    var delivery: Delivery
    var description: String?
    var minVerificationInterval: Int?

    enum CodingKeys: String, CodingKey {
        case iss, aud, delivery, description
        case streamId = "stream_id"
        case eventsSupported = "events_supported"
        case eventsRequested = "events_requested"
        case eventsDelivered = "events_delivered"
        case minVerificationInterval = "min_verification_interval"
    }
}

extension Gateway {
    /// A queued event's token, signed now with the gateway's active key: `iat` now, `iss` (and a user subject's
    /// `iss`) the gateway's issuer.
    func signedSecurityEvent(_ event: QueuedSecurityEvent) async throws -> String {
        var claims = try JSONDecoder().decode(SecurityEventClaims.self, from: event.claims)
        claims.iss = config.issuer
        claims.iat = Int(Date().timeIntervalSince1970)
        if claims.subId.format == "iss_sub" { claims.subId.iss = config.issuer }
        return try await signer.signSecurityEvent(claims)
    }

    /// `/.well-known/ssf-configuration` (SSF 1.0 §7.1).
    func sharedSignalsConfiguration() -> [String: any Sendable] {
        let base = config.publicURL
        return [
            "spec_version": "1_0",
            "issuer": config.issuer,
            "jwks_uri": base + "/.well-known/jwks.json",
            "delivery_methods_supported": [SecurityEvents.DeliveryMethod.push.rawValue,
                                           SecurityEvents.DeliveryMethod.poll.rawValue],
            "configuration_endpoint": base + "/ssf/streams",
            "status_endpoint": base + "/ssf/status",
            "verification_endpoint": base + "/ssf/verify",
            "authorization_schemes": [["spec_urn": "urn:ietf:rfc:6749"]],
            "default_subjects": "ALL",
        ]
    }

    /// What a receiver sends to create or change its stream.
    struct StreamRequest: Decodable, Sendable {
        var streamId: String?
        var delivery: StreamConfiguration.Delivery?
        var eventsRequested: [String]?
        var description: String?

        enum CodingKeys: String, CodingKey {
            case delivery, description
            case streamId = "stream_id"
            case eventsRequested = "events_requested"
        }
    }

    enum StreamRequestError: Error, Equatable {
        case invalid(String)
    }

    /// The stream `request` asks for, checked; `current` is the stream it changes (a PATCH keeps what it omits). A
    /// new stream without `delivery` is polled (SSF 1.0: the transmitter must then assume poll).
    func streamRecord(
        for request: StreamRequest, tenantId: String, current: StreamRecord?
    ) throws(StreamRequestError) -> StreamRecord {
        var request = request
        if current == nil, request.delivery == nil {
            request.delivery = .init(method: SecurityEvents.DeliveryMethod.poll.rawValue)
        }
        let streamId = current?.streamId ?? OneTimeValue.make()
        var record = current ?? StreamRecord(
            streamId: streamId, tenantId: tenantId, method: .push, endpointURL: nil, sealedAuthorization: nil,
            eventsRequested: [], status: .enabled, reason: nil, description: nil, lastDeliveredAt: nil)
        if let delivery = request.delivery {
            guard let method = SecurityEvents.DeliveryMethod(rawValue: delivery.method) else {
                throw .invalid("delivery.method must be \(SecurityEvents.DeliveryMethod.push.rawValue) or "
                    + SecurityEvents.DeliveryMethod.poll.rawValue)
            }
            record.method = method
            switch method {
            case .push:
                guard let endpoint = delivery.endpointUrl else {
                    throw .invalid("delivery.endpoint_url is required for push delivery")
                }
                if let problem = Self.endpointProblem(endpoint, allowPrivate: config.ssfAllowPrivateEndpoints) {
                    throw .invalid("delivery.endpoint_url \(problem)")
                }
                record.endpointURL = endpoint
                if let header = delivery.authorizationHeader {
                    guard !header.isEmpty, header.count <= 4096, !header.contains(where: \.isNewline) else {
                        throw .invalid("delivery.authorization_header must be one line of at most 4096 characters")
                    }
                    do {
                        record.sealedAuthorization = try box.seal(
                            header, context: SecurityEvents.authorizationContext(streamId: streamId))
                    } catch {
                        throw .invalid("delivery.authorization_header could not be stored")
                    }
                } else {
                    record.sealedAuthorization = nil
                }
            case .poll:
                guard delivery.endpointUrl == nil, delivery.authorizationHeader == nil else {
                    throw .invalid("for poll delivery the transmitter supplies endpoint_url; send neither it nor "
                        + "authorization_header")
                }
                record.endpointURL = nil
                record.sealedAuthorization = nil
            }
        }
        if let requested = request.eventsRequested {
            guard requested.count <= 20, requested.allSatisfy({ !$0.isEmpty && $0.count <= 256 }) else {
                throw .invalid("events_requested must be at most 20 event type URIs")
            }
            record.eventsRequested = requested
        }
        if let description = request.description {
            guard description.count <= 256 else { throw .invalid("description must be at most 256 characters") }
            record.description = description
        }
        return record
    }

    /// The stream as SSF shows it (never its authorization header).
    func streamConfiguration(_ stream: StreamRecord) -> StreamConfiguration {
        let supported = SecurityEvents.EventType.requestable.map(\.rawValue)
        return StreamConfiguration(
            streamId: stream.streamId, iss: config.issuer, aud: stream.tenantId, eventsSupported: supported,
            eventsRequested: stream.eventsRequested,
            eventsDelivered: supported.filter { stream.eventsRequested.contains($0) },
            delivery: .init(
                method: stream.method.rawValue,
                endpointUrl: stream.method == .poll
                    ? config.publicURL + SecurityEvents.pollPath + "/" + stream.streamId : stream.endpointURL,
                authorizationHeader: nil),
            description: stream.description, minVerificationInterval: 0)
    }

    /// Why a receiver's push endpoint is refused, or nil: https only, and no loopback, private or link-local literal
    /// address or `localhost` — the gateway must not be made to POST into its own network — unless the operator
    /// allows it (`GATEWAY_SSF_ALLOW_PRIVATE_ENDPOINTS`, for the demo and tests). A host name that resolves to such an
    /// address is not caught here: put the gateway's egress behind a proxy or firewall for that.
    static func endpointProblem(_ endpoint: String, allowPrivate: Bool) -> String? {
        guard endpoint.count <= 2048, let url = URL(string: endpoint), let scheme = url.scheme?.lowercased(),
              let host = url.host?.lowercased(), !host.isEmpty, url.fragment == nil
        else { return "must be an absolute URL without a fragment" }
        if allowPrivate { return ["http", "https"].contains(scheme) ? nil : "must be an http or https URL" }
        guard scheme == "https" else { return "must be an https URL" }
        let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        if bare == "localhost" || bare.hasSuffix(".localhost") { return "must not be the gateway's own host" }
        if let block = ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
                        "192.168.0.0/16", "::1", "::/128", "fc00::/7", "fe80::/10"]
            .compactMap(CIDRBlock.init).first(where: { $0.contains(address: bare) })
        {
            return "must not be a private, loopback or link-local address (\(block))"
        }
        return nil
    }
}
