/// How an app's reporter paces and retries. Defaults are for production; tests shorten them.
package struct ReportingSettings: Sendable {
    /// Minimum time between two PDR requests of one app (the configurable per-app request rate), for the whole
    /// deployment: a replica owning a share of the partitions paces each app at this ÷ its share (``PacingShare``).
    /// Batches fill up with the accounts that became due meanwhile, so a slower rate means fuller batches, not skipped
    /// accounts.
    package var requestInterval: Duration = .seconds(1)
    /// Longest sleep while nothing is due, so accounts held meanwhile are picked up without a wake-up signal.
    package var idlePoll: Duration = .seconds(5)
    /// How many different connections to try after 401s before backing off (ATLASSIAN.md §3.3: bounded retries).
    package var maxTokenAttempts = 3
    /// First backoff after a 5xx, transport error or unavailable gateway; doubles per failure, with full jitter.
    package var backoffBase: Duration = .milliseconds(500)
    /// Cap of that backoff.
    package var backoffMax: Duration = .seconds(60)
    /// Wait after a 429 without a usable `Retry-After`.
    package var defaultRetryAfter: Duration = .seconds(30)
    /// How often an orphaned app asks for a token again.
    package var orphanRetry: Duration = .seconds(60)
    /// Longest a partial batch (fewer than 90 due) waits for more of the app's accounts to come due: it is sent once
    /// 90 are due or once its oldest account has been due this long. First due times are spread over the cycle, so
    /// without it every call would carry only the few accounts that came due since the last one. Reports are late
    /// by at most this, never early. Zero sends at once.
    package var batchWindow: Duration = .zero
    /// Consecutive failed attempts (any cause) after which an app's reporting health is `failing` rather than
    /// `degraded`.
    package var failingAfter = 5
    /// How long past its due time (beyond `batchWindow`) an account may wait before it counts as overdue.
    package var overdueAfter: Duration = .seconds(600)
    /// When an account Atlassian refused on its own (400) is tried again, alone.
    package var rejectedRetry: Duration = .seconds(3600)
    /// How often the health gauges (`lethe_pdr_app_failing`, overdue counts) are recomputed.
    package var healthInterval: Duration = .seconds(15)

    package init() {}
}
