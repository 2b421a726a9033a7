import Hummingbird

/// Answers a request only once what it changed is on the broker (``Durability``): a tenant created, a sign-in's
/// connection, a replayed code's revocation (answered with an error, and a change all the same). Without it an active
/// replica killed in the instant after its answer takes the change with it, and the standby that takes over does not
/// hold what the client was told exists.
///
/// A request that changed nothing finds nothing listed and pays two reads. When the broker has not taken the change
/// within `timeout`, the answer is a 503 saying so: the change is saved on this replica and goes out once the broker
/// answers, but nothing promises it survives this replica's death until then.
struct DurableAnswers<Context: RequestContext>: RouterMiddleware {
    let durability: Durability
    var timeout: Duration = .seconds(10)

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let result: Result<Response, any Error>
        do {
            result = .success(try await next(request, context))
        } catch {
            result = .failure(error)
        }
        guard try await durability.wait(deadline: .now + timeout) else {
            throw HTTPError(
                .serviceUnavailable,
                message: "the change is saved but Kafka has not taken it yet (lethe.gateway.state.v1); retry later")
        }
        return try result.get()
    }
}
