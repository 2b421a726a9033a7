import Hummingbird

/// Answers a request only once what it changed is on the broker: without it a replica killed in the instant after
/// its answer takes the change with it, and the replica that takes over (reading the service's changelog back) does
/// not hold what the client was told exists. oauth-gateway's tenants, sign-ins and revocations; erasure-executor's
/// erasure requests, retries, waivers and retirements.
///
/// `waitUntilOnTheBroker` returns true once every change saved so far is on the broker, false when the deadline came
/// first. Errors wait too: a request answered with an error can have changed something (the gateway revokes a
/// replayed code's grant and answers 400). When the broker has not taken the change within `timeout`, the answer is a
/// 503 saying so: the change is saved on this replica and goes out once the broker answers, but nothing promises it
/// survives this replica's death until then.
package struct DurableAnswers<Context: RequestContext>: RouterMiddleware {
    /// The changelog the changes go to, named in the 503.
    let changelog: String
    /// Whether GET and HEAD requests skip the wait: true for a service whose reads change nothing (the gateway's
    /// sign-in runs on GETs, so it waits for every method).
    let readsChangeNothing: Bool
    let timeout: Duration
    let waitUntilOnTheBroker: @Sendable (ContinuousClock.Instant) async throws -> Bool

    package init(
        changelog: String, readsChangeNothing: Bool, timeout: Duration = .seconds(10),
        waitUntilOnTheBroker: @escaping @Sendable (ContinuousClock.Instant) async throws -> Bool
    ) {
        self.changelog = changelog
        self.readsChangeNothing = readsChangeNothing
        self.timeout = timeout
        self.waitUntilOnTheBroker = waitUntilOnTheBroker
    }

    package func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        if readsChangeNothing, request.method == .get || request.method == .head {
            return try await next(request, context)
        }
        let result: Result<Response, any Error>
        do {
            result = .success(try await next(request, context))
        } catch {
            result = .failure(error)
        }
        guard try await waitUntilOnTheBroker(.now + timeout) else {
            throw HTTPError(
                .serviceUnavailable,
                message: "the change is saved but Kafka has not taken it yet (\(changelog)); retry later")
        }
        return try result.get()
    }
}
