"""The demo's final report: what the scenario did and what every service shows after it, in one page."""
from .launcher import plain
from .scenario import profile_row


def print_report(scenario):
    """Prints the report; returns its one-line summary."""
    s = scenario.system
    plain()
    plain("================ Lethe demo report ================")
    plain(f"namespace {s.namespace}, PDR cycle {s.cycle} s, logs in {s.run_dir}/logs/")
    plain()
    plain("Sign-ins")
    plain(f"  {scenario.sign_ins} users signed in with OpenID Connect (authlib as each tenant's client: "
          f"/oauth/authorize with PKCE and nonce → sandbox /authorize → gateway callback → return URL → /oauth/token "
          f"→ ID token checked against the JWKS → userinfo)")
    plain(f"  a tenant's framework needs only the issuer: {s.gateway}/.well-known/openid-configuration, "
          f"client id = tenant id, client secret = the tenant's")
    reported = report_pdr(scenario)
    completed = report_erasures(scenario)
    report_updated_profile(scenario)
    report_profile_rows(scenario)
    report_participant(scenario)
    audit = scenario.audit or {}
    plain()
    plain(f"Audit chain: ok={audit.get('ok')}, {audit.get('entries')} entries, key {audit.get('keyId')}")
    plain()
    plain(f"All of this on one page: the operator console, {s.url('operator-console')}/ (operator token "
          f"LETHE_ADMIN_TOKEN), while the system runs — `make run` keeps it up (docs/operator-console.md)")
    plain()
    return (f"{scenario.sign_ins} sign-ins, {reported} accounts reported in {len(scenario.calls)} calls, "
            f"{completed} erasures completed, audit {'verified' if audit.get('ok') is True else 'NOT verified'}")


def report_pdr(scenario):
    """Per app: accounts reported, calls, reporting health. Returns how many accounts were reported in all."""
    plain()
    plain("PDR reporting (sandbox call log), per app")
    total_reported = 0
    for tenant in scenario.tenants:
        app = tenant.app_id
        calls = [call for call in scenario.calls if call.get("clientId") == app]
        accounts = {a["accountId"] for call in calls if call.get("status") in (200, 204)
                    for a in call.get("accounts", [])}
        total_reported += len(accounts)
        largest = max((len(call.get("accounts", [])) for call in calls), default=0)
        statuses = sorted({call.get("status") for call in calls})
        kind = "own app of acme" if tenant.own_app else "shared app, used by globex"
        plain(f"  {app} ({kind}): {len(accounts)} accounts reported in {len(calls)} calls "
              f"(largest batch {largest}, statuses {statuses})")
        # Calls per account: what batching saves (1.00 = a call per account; ⌈N/90⌉ calls a cycle is the least).
        status = scenario.app_status.get(app, {})
        health = status.get("health", {})
        state = health.get("state", "unknown") + (f" ({health['reason']})" if health.get("reason") else "")
        per_account = len(calls) / len(accounts) if accounts else 0
        plain(f"      reporting health {state}; {per_account:.2f} calls per account reported; "
              f"{status.get('accountsHeld', 0)} held, {health.get('overdueAccounts', 0)} overdue, "
              f"cycle {status.get('cyclePeriodSeconds', '?')} s")
    return total_reported


def report_erasures(scenario):
    """Each erasure with its policy and every participant's outcome. Returns how many completed."""
    plain()
    plain("Erasures (erasure-executor)")
    completed = 0
    for tenant in scenario.tenants:
        for record in [r for r in scenario.erasures if r.get("tenantId") == tenant.id]:
            outcomes = ", ".join(f"{p.get('participant')}: {p.get('outcome')}"
                                 for p in sorted(record.get("participants", []), key=lambda p: p["participant"]))
            closed_user = next(u for u in tenant.users if u.closed)
            plain(f"  {tenant.id} / {record.get('appId')}: {closed_user.label} closed → erasure {record.get('id')} "
                  f"policy {record.get('policy')}, cause {record.get('cause')}, status {record.get('status')}")
            plain(f"      participants: {outcomes}")
            if record.get("status") == "completed":
                completed += 1
    return completed


def report_updated_profile(scenario):
    plain()
    plain("Updated profile (Atlassian answered `updated`; the gateway refreshed it)")
    for user in scenario.users:
        if user.updated_name:
            row = profile_row(scenario.rows_after[user.tenant.id], user)
            before = profile_row(scenario.rows_before[user.tenant.id], user)
            plain(f"  {user.label} (account {user.account_id}): name {before.get('name')!r} → "
                  f"{(row or {}).get('name')!r} (fetchedAt {before.get('fetchedAt')} → {(row or {}).get('fetchedAt')})")


def report_profile_rows(scenario):
    plain()
    plain("Profile rows (profile-store tenant API)")
    for tenant in scenario.tenants:
        before, after = scenario.rows_before[tenant.id], scenario.rows_after[tenant.id]
        plain(f"  {tenant.id} (policy {tenant.policy}): {len(before)} rows before, {len(after)} after")
        for user in tenant.users:
            row = profile_row(after, user)
            if row is None:
                state = "gone"
            elif all(row.get(f) is None for f in ("name", "email", "nickname", "picture")):
                state = "kept, name/email/nickname/picture null" + ("" if row.get("accountId") else ", no accountId")
            else:
                state = "kept with its profile"
            plain(f"      {user.label}{' (closed)' if user.closed else ''}: {state}")


def report_participant(scenario):
    plain()
    rows = scenario.participant_rows()
    plain(f"python-participant contacts table: {len(rows)} rows, "
          f"{sum(1 for r in rows if r[2] is None and r[3] is None)} scrubbed")
