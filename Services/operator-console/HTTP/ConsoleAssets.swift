/// The console's stylesheet and script, served by the console itself (no CDN: it must work where the operator's
/// network reaches nothing else).
enum ConsoleAssets {
    static let css = """
        :root { --ink: #1d2430; --muted: #5b6573; --line: #d9dee5; --bg: #f6f7f9; --ok: #1f7a3f; --warn: #a05a00;
          --bad: #b3261e; --accent: #2251a6; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
        * { box-sizing: border-box; }
        body { margin: 0; color: var(--ink); background: var(--bg); }
        header { display: flex; gap: 1.5rem; align-items: center; padding: .6rem 1.5rem; background: #1d2430;
          color: #fff; }
        header .brand a { color: #fff; font-weight: 700; font-size: 1.15rem; text-decoration: none; }
        header .brand span { color: #b8c2d0; }
        header .taken { margin-left: auto; color: #b8c2d0; }
        header label { margin-left: 1rem; }
        main { max-width: 1400px; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
        section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: .8rem 1rem;
          margin: 1rem 0; }
        h2 { font-size: 1.05rem; margin: .2rem 0 .6rem; }
        h3 { font-size: .95rem; }
        .tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: .6rem;
          background: none;
          border: 0; padding: 0; }
        .tile { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: .55rem .8rem; }
        .tile span { display: block; color: var(--muted); font-size: .8rem; }
        .tile strong { display: block; font-size: 1.5rem; }
        .tile small { color: var(--muted); }
        .tile.alarm { border-color: var(--bad); box-shadow: inset 4px 0 0 var(--bad); }
        table { width: 100%; border-collapse: collapse; }
        table.narrow { width: auto; min-width: 50%; }
        th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
        th { color: var(--muted); font-weight: 600; font-size: .8rem; }
        tr.attention td { background: #fff6f5; }
        code { font: .85rem ui-monospace, SFMono-Regular, Menlo, monospace; }
        .badge, .chip { display: inline-block; padding: 0 .45rem; border-radius: 999px; font-size: .78rem;
          border: 1px solid var(--line); background: #eef1f5; white-space: nowrap; }
        .chip { margin: 0 .2rem .2rem 0; }
        .badge.ok, .badge.verified, .badge.enabled, .badge.completed, .chip.erased, .chip.scrubbed, .chip.disassociated,
        .chip.nothing-held, .badge.erased, .badge.scrubbed, .badge.disassociated, .badge.nothing-held {
          background: #e6f4ea; border-color: #b7dfc3; color: var(--ok); }
        .badge.degraded, .badge.paused, .badge.dispatched, .badge.pending, .badge.waiting, .chip.waiting, .chip.waived,
        .badge.waived { background: #fff4e0; border-color: #f3d49b; color: var(--warn); }
        .badge.failing, .badge.broken, .badge.overdue, .badge.needs-attention, .badge.disabled, .badge.rejected,
        .chip.failed, .badge.failed { background: #fdecea; border-color: #f2b8b5; color: var(--bad); }
        .flash { padding: .5rem .8rem; border-radius: 6px; }
        .flash.ok { background: #e6f4ea; color: var(--ok); }
        .flash.error { background: #fdecea; color: var(--bad); }
        .bad { color: var(--bad); }
        .note, .empty { color: var(--muted); }
        form.inline { display: inline-flex; gap: .3rem; margin: 0; }
        button { font: inherit; padding: .2rem .7rem; border-radius: 6px; border: 1px solid var(--accent);
          background: var(--accent);
          color: #fff; cursor: pointer; }
        button.quiet { background: transparent; border-color: #b8c2d0; color: #fff; }
        button.danger { background: #fff; color: var(--bad); border-color: var(--bad); }
        input[name=reason] { width: 16rem; }
        meter { width: 5rem; vertical-align: middle; }
        dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
        dl.facts dt { color: var(--muted); }
        dl.facts dd { margin: 0; }
        .sign-in { max-width: 26rem; margin: 12vh auto; background: #fff; border: 1px solid var(--line);
          border-radius: 8px;
          padding: 1.5rem; }
        .sign-in h1 { font-size: 1.2rem; }
        .sign-in input { display: block; width: 100%; margin: .4rem 0 1rem; padding: .45rem; font: inherit; }
        """

    static let javascript = """
        // Refreshes the page every 15 s while the box is ticked, unless the operator is typing in a form; asks before
        // a form marked data-confirm is sent. The page works without it.
        (function () {
          const box = document.getElementById("auto-refresh");
          if (box) {
            box.checked = localStorage.getItem("lethe-console-refresh") !== "off";
            box.addEventListener("change",
              () => localStorage.setItem("lethe-console-refresh", box.checked ? "on" : "off"));
            setInterval(() => {
              const typing = document.activeElement && document.activeElement.tagName === "INPUT"
                && document.activeElement.type !== "checkbox";
              const filled = Array.from(document.querySelectorAll("input[name=reason]")).some((i) => i.value);
              if (box.checked && !typing && !filled) location.reload();
            }, 15000);
          }
          document.querySelectorAll("form[data-confirm]").forEach((form) => {
            form.addEventListener("submit", (event) => { if (!confirm(form.dataset.confirm)) event.preventDefault(); });
          });
        })();
        """
}
