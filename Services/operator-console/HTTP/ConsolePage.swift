import Contracts
import Foundation

/// The console's HTML, rendered on the server from a ``ConsoleSnapshot``: no framework, no CDN, every value escaped.
/// Elements a test or a script reads carry `data-metric` (a figure), `data-erasure` (an erasure's row) or
/// `data-action` (a button) attributes, so the page's look can change without breaking them.
enum ConsolePage {
    // MARK: Pages

    static func overview(_ s: ConsoleSnapshot, csrf: String, flash: Flash?) -> String {
        var body = header(s.takenAt, csrf: csrf) + "<main>"
        if let flash { body += flash.html }
        body += summary(s)
        body += erasuresSection(s, csrf: csrf)
        body += reportingSection(s)
        body += tenantsSection(s)
        body += participantsSection(s, csrf: csrf)
        body += deadLettersSection(s)
        body += auditSection(s)
        body += streamsSection(s)
        return document(title: "Lethe console", body: body + "</main>", refresh: true)
    }

    static func erasure(_ part: ConsoleSnapshot.Part<ErasureSummary>, id: String, csrf: String, flash: Flash?) -> String
    {
        var body = header(Date(), csrf: csrf) + "<main>"
        if let flash { body += flash.html }
        body += "<p><a href=\"/#erasures\">← every open erasure</a></p>"
        switch part {
        case .unavailable(let why):
            body += "<section><h2>Erasure \(h(id))</h2>\(unavailable(why))</section>"
        case .loaded(let e):
            body += "<section id=\"erasure\" data-erasure=\"\(h(e.id))\" data-status=\"\(h(e.status))\">"
            body += "<h2>Erasure <code>\(h(e.id))</code></h2><dl class=\"facts\">"
            body += fact("Status", badge(e.status) + (e.overdue ? " " + badge("overdue") : ""), metric: "status")
            body += fact("Tenant", h(e.tenantId)) + fact("App", "<code>\(h(e.appId))</code>")
            body += fact("Cause", h(e.cause)) + fact("Policy", h(e.policy))
            body += fact("Subject (HMAC)", "<code>\(h(String(e.subject.prefix(16))))…</code>")
            body += fact("Opened", time(e.createdAt)) + fact("Deadline", time(e.deadline))
            body += fact("Completed", e.completedAt.map(time) ?? "—", metric: "completed-at")
            let open = e.status != "completed"
            body += "</dl><table><thead><tr><th>Participant</th><th>Outcome</th><th>Sends</th><th>Failed</th>"
            body +=
                "<th>Acknowledged</th><th>Detail</th>\(open ? "<th>Waive (here only)</th>" : "")</tr></thead><tbody>"
            for p in e.participants {
                body += "<tr data-participant=\"\(h(p.participant))\"><td>\(h(p.participant))</td>"
                body += "<td>\(p.outcome.map(badge) ?? badge("waiting"))</td><td>\(p.sends)</td>"
                body +=
                    "<td>\(p.failedAttempts)</td><td>\(p.ackedAt.map(time) ?? "—")</td><td>\(h(p.detail ?? ""))</td>"
                if open {
                    let awaited = p.outcome == nil || p.outcome == "failed"
                    body += "<td>\(awaited ? waiveForm(e.id, participant: p.participant, csrf: csrf) : "")</td>"
                }
                body += "</tr>"
            }
            body += "</tbody></table>"
            if e.status != "completed" { body += retryButton(e.id, csrf: csrf) }
            body += "</section>"
        }
        return document(title: "Erasure — Lethe console", body: body + "</main>", refresh: true)
    }

    static func signIn(problem: String?) -> String {
        let problemHTML = problem.map { "<p class=\"flash error\" role=\"alert\">\(h($0))</p>" } ?? ""
        return document(
            title: "Sign in — Lethe console",
            body: """
                <main class="sign-in"><h1>Lethe operator console</h1>\(problemHTML)
                <form method="post" action="/login"><label for="token">Operator token (<code>LETHE_ADMIN_TOKEN</code>)</label>
                <input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
                <button type="submit" data-action="sign-in">Sign in</button></form></main>
                """, refresh: false)
    }

    /// A message shown once after an action (carried in the redirect's query: `ok` or `error`, and the text).
    struct Flash {
        var ok: Bool
        var message: String

        var html: String {
            "<p class=\"flash \(ok ? "ok" : "error")\" role=\"status\" data-metric=\"flash\">\(h(message))</p>"
        }
    }

    // MARK: Sections

    private static func header(_ takenAt: Date, csrf: String) -> String {
        """
        <header><div class="brand"><a href="/">Lethe</a> <span>operator console</span></div>
        <div class="taken">as of <time data-metric="taken-at" datetime="\(iso(takenAt))">\(clock(takenAt))</time> UTC
        <label><input type="checkbox" id="auto-refresh" checked> refresh every 15 s</label></div>
        <form method="post" action="/logout"><input type="hidden" name="csrf" value="\(h(csrf))">
        <button type="submit" class="quiet">Sign out</button></form></header>
        """
    }

    private static func summary(_ s: ConsoleSnapshot) -> String {
        var tiles = ""
        tiles += tile("Tenants", s.tenants.value.map { "\($0.count)" }, metric: "tenants")
        let apps = s.apps.value
        let failing = apps?.filter { $0.health.state == "failing" }.count ?? 0
        tiles += tile(
            "Apps reporting", apps.map { "\($0.count)" }, metric: "apps",
            note: apps.map { _ in failing == 0 ? "none failing" : "\(failing) failing" }, alarm: failing > 0)
        let held = apps?.reduce(0) { $0 + $1.accountsHeld }
        let reported = apps?.reduce(0) { $0 + $1.reportedInCurrentCycle }
        tiles += tile("Accounts held", held.map { "\($0)" }, metric: "accounts-held")
        tiles += tile(
            "Reported this cycle", reported.map { "\($0)" }, metric: "reported-this-cycle",
            note: held.map { "of \($0)" })
        let counts = s.counts.value
        tiles += tile("Open erasures", counts.map { "\($0.open)" }, metric: "erasures-open")
        tiles += tile(
            "Overdue", counts.map { "\($0.overdue)" }, metric: "erasures-overdue", alarm: (counts?.overdue ?? 0) > 0)
        tiles += tile(
            "Need attention", counts.map { "\($0.needsAttention)" }, metric: "erasures-needs-attention",
            alarm: (counts?.needsAttention ?? 0) > 0)
        tiles += tile("Completed", counts.map { "\($0.completed)" }, metric: "erasures-completed")
        tiles += tile("Participants", s.participants.value.map { "\($0.declared.count)" }, metric: "participants")
        let dead = s.deadLetters.value?.reduce(0) { $0 + ($1.records ?? 0) }
        tiles += tile("Dead letters", dead.map { "\($0)" }, metric: "dead-letters", alarm: (dead ?? 0) > 0)
        let audit = s.audit.value
        tiles += tile(
            "Audit", audit.map { $0.ok ? "verified" : "BROKEN" }, metric: "audit",
            note: audit.map { "\($0.entries) entries" }, alarm: audit.map { !$0.ok } ?? false)
        let streams = s.streams.value
        tiles += tile(
            "Security events waiting", streams.map { "\($0.reduce(0) { $0 + $1.pending })" },
            metric: "ssf-pending", note: streams.map { "\($0.reduce(0) { $0 + $1.dead }) given up" },
            alarm: (streams?.reduce(0) { $0 + $1.dead } ?? 0) > 0)
        return "<section id=\"summary\" class=\"tiles\" aria-label=\"Summary\">\(tiles)</section>"
    }

    private static func erasuresSection(_ s: ConsoleSnapshot, csrf: String) -> String {
        var html = "<section id=\"erasures\"><h2>Open erasures</h2>"
        guard case .loaded(let open) = s.openErasures else {
            return html + unavailable(s.openErasures) + "</section>"
        }
        if open.isEmpty { return html + "<p class=\"empty\">No erasure is open.</p></section>" }
        html += "<table><thead><tr><th>Erasure</th><th>Tenant</th><th>App</th><th>Cause</th><th>Status</th>"
        html += "<th>Opened</th><th>Deadline</th><th>Participants</th><th></th></tr></thead><tbody>"
        for e in open {
            let attention = e.status == "needs-attention" || e.overdue
            html +=
                "<tr data-erasure=\"\(h(e.id))\" data-status=\"\(h(e.status))\"\(attention ? " class=\"attention\"" : "")>"
            html += "<td><a href=\"/erasures/\(h(e.id))\"><code>\(h(String(e.id.prefix(8))))</code></a></td>"
            html += "<td>\(h(e.tenantId))</td><td><code>\(h(e.appId))</code></td><td>\(h(e.cause))</td>"
            html += "<td>\(badge(e.status))\(e.overdue ? " " + badge("overdue") : "")</td>"
            html += "<td>\(time(e.createdAt))</td><td>\(time(e.deadline))</td><td>"
            for p in e.participants {
                let state = p.outcome ?? "waiting"
                let detail = [p.failedAttempts > 0 ? "failed \(p.failedAttempts)×" : nil, p.detail].compactMap { $0 }
                html += "<span class=\"chip \(h(state))\" title=\"\(h(detail.joined(separator: ": ")))\">"
                html += "\(h(p.participant)) · \(h(state))</span> "
            }
            html += "</td><td>\(retryButton(e.id, csrf: csrf))</td></tr>"
        }
        return html + "</tbody></table></section>"
    }

    private static func reportingSection(_ s: ConsoleSnapshot) -> String {
        var html = "<section id=\"reporting\"><h2>Personal Data Reporting</h2>"
        let asked = s.reporters.map { r in
            r.problem.map { "<span class=\"bad\">\(h(r.address)): \(h($0))</span>" }
                ?? "\(h(r.address)) (\(r.apps ?? 0) apps)"
        }
        html +=
            "<p class=\"note\">Asked \(s.reporters.count) reporter\(s.reporters.count == 1 ? "" : "s"): "
            + asked.joined(separator: ", ") + "</p>"
        guard case .loaded(let apps) = s.apps else { return html + unavailable(s.apps) + "</section>" }
        if apps.isEmpty { return html + "<p class=\"empty\">No account is held yet.</p></section>" }
        let tenantsByApp = Dictionary(grouping: s.tenants.value ?? [], by: { $0.app?.appId ?? "" })
        html += "<table><thead><tr><th>App</th><th>Tenants</th><th>Held</th><th>Reported this cycle</th>"
        html += "<th>Due now</th><th>Overdue</th><th>Rejected</th><th>Health</th><th>Last call</th><th>Next due</th>"
        html += "</tr></thead><tbody>"
        for app in apps {
            let share = app.accountsHeld == 0 ? 0 : Double(app.reportedInCurrentCycle) / Double(app.accountsHeld)
            let tenants = (tenantsByApp[app.appId] ?? []).map(\.tenantId).joined(separator: ", ")
            html += "<tr data-app=\"\(h(app.appId))\"><td><code>\(h(app.appId))</code></td><td>\(h(tenants))</td>"
            html += "<td data-metric=\"held\">\(app.accountsHeld)</td><td><span data-metric=\"reported\">"
            html += "\(app.reportedInCurrentCycle)</span> / \(app.accountsHeld) <meter min=\"0\" max=\"1\" value=\""
            html += String(format: "%.3f", share) + "\"></meter></td><td>\(app.dueNow)</td>"
            html += "<td>\(app.health.overdueAccounts)</td><td>\(app.rejected)</td><td>\(badge(app.health.state))"
            if let reason = app.health.reason { html += " \(h(reason))" }
            if let since = app.health.since { html += " since \(time(since))" }
            html += "</td><td>\(app.lastCallAt.map(time) ?? "—")</td><td>\(app.nextDueAt.map(time) ?? "—")</td></tr>"
        }
        return html + "</tbody></table></section>"
    }

    private static func tenantsSection(_ s: ConsoleSnapshot) -> String {
        var html = "<section id=\"tenants\"><h2>Tenants</h2>"
        guard case .loaded(let tenants) = s.tenants else { return html + unavailable(s.tenants) + "</section>" }
        if tenants.isEmpty { return html + "<p class=\"empty\">No tenant yet.</p></section>" }
        let streams = Dictionary((s.streams.value ?? []).map { ($0.tenantId, $0) }, uniquingKeysWith: { a, _ in a })
        html += "<table><thead><tr><th>Tenant</th><th>Atlassian app</th><th>Erasure policy</th><th>Deadline</th>"
        html += "<th>State</th><th>Shared Signals</th></tr></thead><tbody>"
        for t in tenants {
            let app = t.app.map { "<code>\(h($0.appId))</code> " + ($0.shared ? "(shared)" : "(own)") } ?? "none yet"
            let stream = streams[t.tenantId].map {
                "\(h($0.method == "urn:ietf:rfc:8936" ? "poll" : "push")) · \(badge($0.status))"
            }
            html +=
                "<tr data-tenant=\"\(h(t.tenantId))\"><td>\(h(t.tenantId))</td><td>\(app)</td><td>\(h(t.erasurePolicy))</td>"
            html += "<td>\(t.deadlineDays) days</td><td>\(t.disabled ? badge("disabled") : badge("enabled"))</td>"
            html += "<td>\(stream ?? "no stream")</td></tr>"
        }
        return html + "</tbody></table></section>"
    }

    private static func participantsSection(_ s: ConsoleSnapshot, csrf: String) -> String {
        var html = "<section id=\"participants\"><h2>Erasure participants</h2>"
        guard case .loaded(let overview) = s.participants else {
            return html + unavailable(s.participants) + "</section>"
        }
        html += "<table><thead><tr><th>Participant</th><th>Holds</th><th>Declared</th><th>Last acknowledgement</th>"
        html +=
            "<th>Erasures waiting for it</th><th>Declaration</th><th>Retire (waives it everywhere)</th></tr></thead><tbody>"
        for p in overview.declared {
            html += "<tr data-participant=\"\(h(p.participant))\"><td>\(h(p.participant))</td>"
            html += "<td>\(h(p.holds.joined(separator: ", ")))</td><td>\(time(p.declaredAt))</td>"
            html += "<td>\(p.lastAckAt.map(time) ?? "never")</td><td data-metric=\"awaited\">\(p.awaited)</td>"
            html += "<td>\(p.rejectedDeclaration.map { badge("rejected") + " " + h($0) } ?? badge("ok"))</td><td>"
            html +=
                "<form method=\"post\" action=\"/participants/\(h(ServiceAPIs.pathSegment(p.participant)))/retire\" "
            html +=
                "class=\"inline\" data-confirm=\"Retire \(h(p.participant))? Every open erasure stops waiting for it.\">"
            html += "<input type=\"hidden\" name=\"csrf\" value=\"\(h(csrf))\"><input name=\"reason\" required "
            html += "maxlength=\"500\" placeholder=\"reason (kept in the audit)\" aria-label=\"reason\">"
            html += "<button type=\"submit\" class=\"danger\" data-action=\"retire\">Retire</button></form></td></tr>"
        }
        html += "</tbody></table>"
        if !overview.retirements.isEmpty {
            html += "<h3>Retired</h3><ul>"
            for r in overview.retirements {
                html += "<li>\(h(r.participant)) at \(time(r.retiredAt)): \(h(r.reason)) — waived in \(r.waived), "
                html += "completing \(r.completed)</li>"
            }
            html += "</ul>"
        }
        return html + "</section>"
    }

    private static func deadLettersSection(_ s: ConsoleSnapshot) -> String {
        var html = "<section id=\"dead-letters\"><h2>Dead-letter topics</h2>"
        guard case .loaded(let depths) = s.deadLetters else { return html + unavailable(s.deadLetters) + "</section>" }
        html += "<table class=\"narrow\"><thead><tr><th>Topic</th><th>Records</th></tr></thead><tbody>"
        for d in depths {
            let count = d.records.map { "\($0)" } ?? "—"
            html += "<tr data-topic=\"\(h(d.topic))\"\((d.records ?? 0) > 0 ? " class=\"attention\"" : "")>"
            html += "<td><code>\(h(d.topic))</code></td><td data-metric=\"records\">\(count)</td></tr>"
        }
        return html + "</tbody></table><p class=\"note\">— : not created yet. Each record carries its reason in the "
            + "<code>lethe_error</code> header.</p></section>"
    }

    private static func auditSection(_ s: ConsoleSnapshot) -> String {
        var html = "<section id=\"audit\"><h2>Audit</h2>"
        guard case .loaded(let audit) = s.audit else { return html + unavailable(s.audit) + "</section>" }
        html += "<p>\(audit.ok ? badge("verified") : badge("broken")) <span data-metric=\"audit-entries\">"
        let chains = audit.chains.map { "<span data-metric=\"audit-chains\">\($0)</span> hash chains" } ?? "hash chain"
        html += "\(audit.entries)</span> entries, \(chains) and signatures checked now (key <code>\(h(audit.keyId))</code>)."
        if let broken = audit.firstBrokenSequence {
            let chain = audit.firstBrokenChain.map { "chain \($0), " } ?? ""
            html += " First broken entry: \(chain)#\(broken)\(audit.reason.map { " — " + h($0) } ?? "")."
        }
        return html + " <a href=\"/audit/export\" download data-action=\"export\">Export (JSON lines)</a></p></section>"
    }

    private static func streamsSection(_ s: ConsoleSnapshot) -> String {
        var html = "<section id=\"shared-signals\"><h2>Shared Signals streams</h2>"
        guard case .loaded(let streams) = s.streams else { return html + unavailable(s.streams) + "</section>" }
        if streams.isEmpty { return html + "<p class=\"empty\">No tenant has a stream.</p></section>" }
        html += "<table><thead><tr><th>Tenant</th><th>Delivery</th><th>Status</th><th>Waiting</th><th>Given up</th>"
        html += "<th>Oldest waiting</th><th>Last delivered</th><th>Last error</th></tr></thead><tbody>"
        for st in streams {
            let method = st.method == "urn:ietf:rfc:8936" ? "poll" : "push to \(h(st.endpointOrigin ?? "?"))"
            html += "<tr data-stream=\"\(h(st.tenantId))\"\(st.dead > 0 ? " class=\"attention\"" : "")>"
            html +=
                "<td>\(h(st.tenantId))</td><td>\(method)</td><td>\(badge(st.status))\(st.reason.map { " " + h($0) } ?? "")</td>"
            html += "<td data-metric=\"pending\">\(st.pending)</td><td data-metric=\"dead\">\(st.dead)</td>"
            html += "<td>\(st.oldestPendingAt.map(time) ?? "—")</td><td>\(st.lastDeliveredAt.map(time) ?? "—")</td>"
            html += "<td>\(h(st.lastError ?? ""))</td></tr>"
        }
        return html + "</tbody></table></section>"
    }

    // MARK: Pieces

    private static func retryButton(_ id: String, csrf: String) -> String {
        """
        <form method="post" action="/erasures/\(h(ServiceAPIs.pathSegment(id)))/retry" class="inline">\
        <input type="hidden" name="csrf" value="\(h(csrf))">\
        <button type="submit" data-action="retry" title="Send the command again to every participant that has not \
        acknowledged, and start counting failures afresh">Retry</button></form>
        """
    }

    /// The waiver of one participant in one erasure: it stops waiting for it, with a reason kept in the audit.
    private static func waiveForm(_ id: String, participant: String, csrf: String) -> String {
        """
        <form method="post" action="/erasures/\(h(ServiceAPIs.pathSegment(id)))/waive" class="inline" \
        data-confirm="Waive \(h(participant)) in this erasure? It completes without its acknowledgement.">\
        <input type="hidden" name="csrf" value="\(h(csrf))"><input type="hidden" name="participant" \
        value="\(h(participant))"><input name="reason" required maxlength="500" \
        placeholder="reason (kept in the audit)" aria-label="reason"><button type="submit" class="danger" \
        data-action="waive">Waive</button></form>
        """
    }

    private static func tile(
        _ label: String, _ value: String?, metric: String, note: String? = nil, alarm: Bool = false
    )
        -> String
    {
        let shown =
            value.map { "<strong data-metric=\"\(metric)\">\(h($0))</strong>" }
            ?? "<strong data-metric=\"\(metric)\" class=\"bad\" title=\"its service did not answer\">?</strong>"
        return "<div class=\"tile\(alarm ? " alarm" : "")\"><span>\(h(label))</span>\(shown)"
            + (note.map { "<small>\(h($0))</small>" } ?? "") + "</div>"
    }

    private static func fact(_ name: String, _ valueHTML: String, metric: String? = nil) -> String {
        "<dt>\(h(name))</dt><dd\(metric.map { " data-metric=\"\($0)\"" } ?? "")>\(valueHTML)</dd>"
    }

    private static func badge(_ state: String) -> String {
        "<span class=\"badge \(h(state))\">\(h(state))</span>"
    }

    private static func unavailable<T>(_ part: ConsoleSnapshot.Part<T>) -> String {
        if case .unavailable(let why) = part { return unavailable(why) }
        return ""
    }

    private static func unavailable(_ why: String) -> String {
        "<p class=\"flash error\" role=\"alert\">Unavailable: \(h(why))</p>"
    }

    private static func document(title: String, body: String, refresh: Bool) -> String {
        """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(h(title))</title><link rel="stylesheet" href="/console.css">\
        \(refresh ? "<script src=\"/console.js\" defer></script>" : "")</head>
        <body>\(body)</body></html>
        """
    }

    /// A time the services gave (RFC 3339) as `YYYY-MM-DD HH:MM:SS`, the whole value in the tooltip.
    private static func time(_ text: String) -> String {
        let shown = text.replacingOccurrences(of: "T", with: " ").prefix(19)
        return "<time datetime=\"\(h(text))\" title=\"\(h(text))\">\(h(String(shown)))</time>"
    }

    private static func iso(_ date: Date) -> String { ISO8601DateFormatter().string(from: date) }

    private static func clock(_ date: Date) -> String {
        let seconds = Int(date.timeIntervalSince1970) % 86_400
        return String(format: "%02d:%02d:%02d", seconds / 3600, seconds / 60 % 60, seconds % 60)
    }

    /// Escapes text for HTML content and attribute values.
    static func h(_ text: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.count)
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
