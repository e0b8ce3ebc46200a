//! The role x route access matrix, written once as data: every route the daemon serves on
//! `daemon.listen`, who may call it, and whether calls are audited. The guard middleware
//! (`api::guard`) enforces it, `docs/security.md` shows it (rendered by [`markdown`] and
//! kept current by a test), and `tests/api_matrix.rs` walks every row with every role and
//! without a token. A route the router serves but this table does not list is refused
//! (fail closed) and fails the route-listing test.

use super::auth::Role;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Anyone, no token (liveness, readiness, the OpenAPI document).
    Public,
    /// A bearer token of one of these roles.
    Roles(&'static [Role]),
    /// `/metrics`: per `[auth] metrics_access`, any loopback client without a token
    /// (default), or a bearer token of one of these roles.
    Metrics(&'static [Role]),
    /// Web pages (`web`): a signed-in session of one of these roles (a cookie from
    /// `/signin`, which takes an API token), not a bearer token. Without a session a page
    /// redirects to `/signin` and a form post is refused 401; another role is refused 403.
    Session(&'static [Role]),
    /// ZKTeco push routes: the devices cannot send tokens; a request is accepted only from
    /// a reader serial (`SN=`) in a site's allowlist (`access.readers`), checked by
    /// `access::ingest`.
    DeviceSerial,
}

/// Whether calls of a route go into the audit chain. Denied calls (401, 403, 429) of any
/// route that needs a token are always recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audit {
    /// Only denials.
    Denials,
    /// Every call, whatever its result (writes; later: exports of personal data).
    Always,
}

/// One row of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRule {
    /// HTTP method (`HEAD` is served and guarded as `GET`).
    pub method: &'static str,
    /// The route as the router spells it (`{param}` segments).
    pub path: &'static str,
    /// Who may call it.
    pub guard: Guard,
    /// What is audited.
    pub audit: Audit,
    /// One line for the documentation.
    pub summary: &'static str,
}

impl RouteRule {
    /// True when `role` may call this route with a token.
    pub fn allows(&self, role: Role) -> bool {
        match self.guard {
            Guard::Roles(roles) | Guard::Metrics(roles) | Guard::Session(roles) => {
                roles.contains(&role)
            }
            Guard::Public | Guard::DeviceSerial => true,
        }
    }

    /// True when the route needs a bearer token (always, or for `/metrics` in token mode).
    pub fn needs_token(&self) -> bool {
        matches!(self.guard, Guard::Roles(_))
    }

    /// True for the web pages and their assets (served by `web`, not in the OpenAPI
    /// document).
    pub fn is_page(&self) -> bool {
        matches!(self.guard, Guard::Session(_))
            || self.path.starts_with("/static/")
            || self.path == "/signin"
    }
}

use Role::{Admin, Integrator, Operator, Security, Viewer};

/// Reading facility state, alarms, incidents and deliveries.
const READ: &[Role] = &[Viewer, Operator, Security, Admin];
/// Access data: events, exports, findings, the audit chain.
const SECURITY: &[Role] = &[Security, Admin];
/// Operator actions: acknowledge, shelve, out of service, maintenance windows, retries.
const OPERATE: &[Role] = &[Operator, Admin];
/// Who is inside now: security, and the operators who must know it in a fire.
const OCCUPANCY: &[Role] = &[Security, Operator, Admin];
/// Data in from other systems: visit tickets, reader event batches.
const INTEGRATE: &[Role] = &[Integrator, Admin];
/// Who may sign in to the web pages (integrators are machine accounts: no pages).
const PAGES: &[Role] = &[Viewer, Operator, Security, Admin];

const fn get(path: &'static str, guard: Guard, summary: &'static str) -> RouteRule {
    RouteRule {
        method: "GET",
        path,
        guard,
        audit: Audit::Denials,
        summary,
    }
}

const fn write(
    method: &'static str,
    path: &'static str,
    guard: Guard,
    summary: &'static str,
) -> RouteRule {
    RouteRule {
        method,
        path,
        guard,
        audit: Audit::Always,
        summary,
    }
}

/// The matrix. Order: system, facility, alarms, incidents, deliveries, device push.
pub const MATRIX: &[RouteRule] = &[
    // --- system ---
    get("/healthz", Guard::Public, "liveness: the process answers"),
    get(
        "/readyz",
        Guard::Public,
        "readiness: configuration loaded, store open, sources started",
    ),
    get(
        "/metrics",
        Guard::Metrics(READ),
        "Prometheus metrics (loopback without a token by default)",
    ),
    get(
        "/api/v1/openapi.json",
        Guard::Public,
        "this API's OpenAPI 3 document",
    ),
    // --- facility and live state ---
    get(
        "/api/v1/sites",
        Guard::Roles(READ),
        "sites with live counts",
    ),
    get(
        "/api/v1/sites/{site}",
        Guard::Roles(READ),
        "one site: facts, limits, counts",
    ),
    get(
        "/api/v1/sites/{site}/rooms",
        Guard::Roles(READ),
        "rooms with climate limits and latest climate",
    ),
    get(
        "/api/v1/sites/{site}/racks",
        Guard::Roles(READ),
        "racks with class, limit and latest feed power",
    ),
    get(
        "/api/v1/sites/{site}/devices",
        Guard::Roles(READ),
        "devices with kind, room and health",
    ),
    get(
        "/api/v1/sites/{site}/devices/{device}",
        Guard::Roles(READ),
        "one device with every point",
    ),
    get(
        "/api/v1/sites/{site}/points",
        Guard::Roles(READ),
        "points with latest value, quality and limits",
    ),
    get(
        "/api/v1/sites/{site}/power",
        Guard::Roles(READ),
        "power chain: utility, transfer switches, UPS, gensets, fuel",
    ),
    get(
        "/api/v1/sites/{site}/cooling",
        Guard::Roles(READ),
        "cooling units and room climate against limits",
    ),
    // --- alarms ---
    get(
        "/api/v1/alarms",
        Guard::Roles(READ),
        "alarms that are not plainly normal, filtered",
    ),
    write(
        "POST",
        "/api/v1/alarms/acknowledge",
        Guard::Roles(OPERATE),
        "acknowledge an alarm with a comment",
    ),
    write(
        "POST",
        "/api/v1/alarms/shelve",
        Guard::Roles(OPERATE),
        "shelve an alarm for a time within the maximum, with a reason",
    ),
    write(
        "POST",
        "/api/v1/alarms/unshelve",
        Guard::Roles(OPERATE),
        "unshelve an alarm",
    ),
    write(
        "POST",
        "/api/v1/alarms/out-of-service",
        Guard::Roles(OPERATE),
        "take an alarm out of service, with a reason",
    ),
    write(
        "POST",
        "/api/v1/alarms/return-to-service",
        Guard::Roles(OPERATE),
        "return an alarm to service",
    ),
    get(
        "/api/v1/maintenance-windows",
        Guard::Roles(READ),
        "maintenance windows, planned and running",
    ),
    write(
        "POST",
        "/api/v1/maintenance-windows",
        Guard::Roles(OPERATE),
        "plan a maintenance window (e.g. the monthly genset load test)",
    ),
    write(
        "POST",
        "/api/v1/maintenance-windows/{id}/end",
        Guard::Roles(OPERATE),
        "end a maintenance window now",
    ),
    // --- incidents and delivery ---
    get(
        "/api/v1/incidents",
        Guard::Roles(READ),
        "incidents, newest first, filtered",
    ),
    get(
        "/api/v1/incidents/{id}",
        Guard::Roles(READ),
        "one incident with its transitions and delivery status",
    ),
    get(
        "/api/v1/deliveries/parked",
        Guard::Roles(READ),
        "deliveries a receiver rejected, waiting for an operator",
    ),
    write(
        "POST",
        "/api/v1/deliveries/{id}/retry",
        Guard::Roles(OPERATE),
        "retry a parked delivery after fixing its cause",
    ),
    // --- access (security) ---
    get(
        "/api/v1/access/events",
        Guard::Roles(SECURITY),
        "access events query",
    ),
    RouteRule {
        method: "GET",
        path: "/api/v1/access/events.csv",
        guard: Guard::Roles(SECURITY),
        audit: Audit::Always,
        summary: "access events CSV export (every call audited)",
    },
    get(
        "/api/v1/findings",
        Guard::Roles(SECURITY),
        "findings by site, rule, person, ticket, period",
    ),
    RouteRule {
        method: "GET",
        path: "/api/v1/findings.csv",
        guard: Guard::Roles(SECURITY),
        audit: Audit::Always,
        summary: "findings CSV export (every call audited)",
    },
    get(
        "/api/v1/audit/status",
        Guard::Roles(SECURITY),
        "audit chain head and verification state",
    ),
    write(
        "POST",
        "/api/v1/findings/{id}/review",
        Guard::Roles(SECURITY),
        "mark a finding reviewed with a note",
    ),
    get(
        "/api/v1/visits",
        Guard::Roles(SECURITY),
        "visit tickets by site, state, period, person",
    ),
    get(
        "/api/v1/visits/{ticket}",
        Guard::Roles(SECURITY),
        "one visit with its report (entries, exits, escort pairing, findings)",
    ),
    get(
        "/api/v1/occupancy",
        Guard::Roles(OCCUPANCY),
        "who is inside each site now, by room",
    ),
    // --- access (integrators: the service desk and other reader systems) ---
    write(
        "POST",
        "/api/v1/visits",
        Guard::Roles(INTEGRATE),
        "create a visit ticket (service desk)",
    ),
    write(
        "PUT",
        "/api/v1/visits/{ticket}",
        Guard::Roles(INTEGRATE),
        "update a visit ticket",
    ),
    write(
        "POST",
        "/api/v1/visits/{ticket}/cancel",
        Guard::Roles(INTEGRATE),
        "cancel a visit ticket",
    ),
    write(
        "POST",
        "/api/v1/access/events",
        Guard::Roles(INTEGRATE),
        "reader event batch (JSON) from another reader system",
    ),
    // --- web pages (a signed-in session; `docs/web.md`) ---
    get(
        "/static/dcguard.css",
        Guard::Public,
        "the web pages' style sheet",
    ),
    get(
        "/static/dcguard.js",
        Guard::Public,
        "the web pages' script (live updates by SSE)",
    ),
    get("/signin", Guard::Public, "sign-in page: takes an API token"),
    RouteRule {
        method: "POST",
        path: "/signin",
        guard: Guard::Public,
        // Audited by the handler: the actor of a sign-in is known only once it succeeded.
        audit: Audit::Denials,
        summary: "sign in: opens a session (every sign-in and failure audited; failures rate-limited)",
    },
    write(
        "POST",
        "/signout",
        Guard::Session(PAGES),
        "sign out: ends the session",
    ),
    get("/", Guard::Session(PAGES), "the start page of the role"),
    get(
        "/control-room",
        Guard::Session(READ),
        "control room: sites, climate, power, cooling, alarms, incidents",
    ),
    get(
        "/control-room/live",
        Guard::Session(READ),
        "the control room's live part (HTML fragment)",
    ),
    get(
        "/control-room/events",
        Guard::Session(READ),
        "server-sent events: the control room changed",
    ),
    write(
        "POST",
        "/control-room/acknowledge",
        Guard::Session(OPERATE),
        "acknowledge an alarm (form; same code as the API)",
    ),
    write(
        "POST",
        "/control-room/shelve",
        Guard::Session(OPERATE),
        "shelve an alarm (form; same code as the API)",
    ),
    get(
        "/security",
        Guard::Session(SECURITY),
        "security review: findings, occupancy, access log, audit chain",
    ),
    get(
        "/security/visits/{ticket}",
        Guard::Session(SECURITY),
        "a visit's timeline: entries, exits, escort pairing, findings",
    ),
    write(
        "POST",
        "/security/findings/{id}/review",
        Guard::Session(SECURITY),
        "review a finding with a note (form; same code as the API)",
    ),
    RouteRule {
        method: "GET",
        path: "/security/events.csv",
        guard: Guard::Session(SECURITY),
        audit: Audit::Always,
        summary: "access events CSV export from the page (every call audited)",
    },
    // --- biometric readers (ZKTeco PUSH; served when a site has readers) ---
    get(
        "/iclock/cdata",
        Guard::DeviceSerial,
        "reader handshake (options)",
    ),
    RouteRule {
        method: "POST",
        path: "/iclock/cdata",
        guard: Guard::DeviceSerial,
        audit: Audit::Denials,
        summary: "reader event upload (every event goes into the audit chain)",
    },
    get(
        "/iclock/cdata.aspx",
        Guard::DeviceSerial,
        "reader handshake, older firmware",
    ),
    RouteRule {
        method: "POST",
        path: "/iclock/cdata.aspx",
        guard: Guard::DeviceSerial,
        audit: Audit::Denials,
        summary: "reader event upload, older firmware",
    },
    get(
        "/iclock/getrequest",
        Guard::DeviceSerial,
        "reader command poll (never a command)",
    ),
    get(
        "/iclock/getrequest.aspx",
        Guard::DeviceSerial,
        "reader command poll, older firmware",
    ),
    get("/iclock/ping", Guard::DeviceSerial, "reader keep-alive"),
    RouteRule {
        method: "POST",
        path: "/iclock/devicecmd",
        guard: Guard::DeviceSerial,
        audit: Audit::Denials,
        summary: "reader command result (ignored: no command is ever sent)",
    },
    RouteRule {
        method: "POST",
        path: "/iclock/devicecmd.aspx",
        guard: Guard::DeviceSerial,
        audit: Audit::Denials,
        summary: "reader command result, older firmware",
    },
];

/// Routes designed but not served yet: they join [`MATRIX`] when they exist. Shown in
/// `docs/security.md`. Empty: every designed route is served.
pub const COMING: &[(&str, &str, &[Role], &str)] = &[];

/// The matrix row of a request, by method and matched route; `HEAD` counts as `GET`.
pub fn lookup(method: &str, path: &str) -> Option<&'static RouteRule> {
    let method = if method == "HEAD" { "GET" } else { method };
    MATRIX.iter().find(|r| r.method == method && r.path == path)
}

/// True when some row lists `path` (with any method).
pub fn lists_path(path: &str) -> bool {
    MATRIX.iter().any(|r| r.path == path)
}

fn cell(rule: &RouteRule, role: Role) -> &'static str {
    match rule.guard {
        Guard::Public => "public",
        Guard::DeviceSerial => "serial",
        Guard::Metrics(_) if rule.allows(role) => "yes\\*",
        Guard::Roles(_) | Guard::Metrics(_) if rule.allows(role) => "yes",
        Guard::Session(_) if rule.allows(role) => "page",
        _ => "-",
    }
}

/// The matrix as the Markdown of `docs/security.md` (between its markers).
pub fn markdown() -> String {
    let mut out = String::new();
    out.push_str("| method | route | no token |");
    for role in Role::ALL {
        out.push_str(&format!(" {role} |"));
    }
    out.push_str(" audited | what |\n|---|---|---|");
    for _ in Role::ALL {
        out.push_str("---|");
    }
    out.push_str("---|---|\n");
    for rule in MATRIX {
        let anonymous = match rule.guard {
            Guard::Public => "yes",
            Guard::DeviceSerial => "serial",
            Guard::Metrics(_) => "loopback\\*",
            Guard::Roles(_) => "401",
            Guard::Session(_) if rule.method == "GET" => "sign-in",
            Guard::Session(_) => "401",
        };
        out.push_str(&format!(
            "| {} | `{}` | {anonymous} |",
            rule.method, rule.path
        ));
        for role in Role::ALL {
            out.push_str(&format!(" {} |", cell(rule, role)));
        }
        let audited = match (rule.audit, rule.guard) {
            (Audit::Always, _) => "every call",
            (Audit::Denials, Guard::Roles(_) | Guard::Metrics(_) | Guard::Session(_)) => "denials",
            (Audit::Denials, _) => "-",
        };
        out.push_str(&format!(" {audited} | {} |\n", rule.summary));
    }
    out
}

/// The designed routes of [`COMING`] as Markdown.
pub fn coming_markdown() -> String {
    if COMING.is_empty() {
        return "None: every designed route is served.\n".to_owned();
    }
    let mut out = String::from("| method | route | roles | what |\n|---|---|---|---|\n");
    for (method, path, roles, what) in COMING {
        let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        out.push_str(&format!(
            "| {method} | `{path}` | {} | {what} |\n",
            roles.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each (method, route) appears once, and no designed route is served yet.
    #[test]
    fn rows_are_unique_and_coming_routes_are_not_served() {
        for (i, a) in MATRIX.iter().enumerate() {
            for b in &MATRIX[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {} twice",
                    a.method,
                    a.path
                );
            }
        }
        for (method, path, _, _) in COMING {
            assert!(lookup(method, path).is_none(), "{method} {path}");
        }
        assert_eq!(
            lookup("HEAD", "/api/v1/sites").map(|r| r.method),
            Some("GET")
        );
        assert!(lookup("DELETE", "/api/v1/sites").is_none());
        assert!(lists_path("/api/v1/sites"));
    }

    /// Writes are audited on every call; integrators only send data in (visit tickets,
    /// event batches) and read nothing; integrator routes are theirs and the admin's alone.
    #[test]
    fn writes_are_audited_and_integrators_read_nothing() {
        let mut integrator_routes = 0;
        for rule in MATRIX {
            if rule.method != "GET" && rule.path.starts_with("/api/") {
                assert_eq!(rule.audit, Audit::Always, "{}", rule.path);
            }
            if rule.needs_token() {
                assert!(rule.allows(Role::Admin), "{}", rule.path);
                if rule.allows(Role::Integrator) {
                    integrator_routes += 1;
                    assert_ne!(rule.method, "GET", "{}", rule.path);
                    for role in [Role::Viewer, Role::Operator, Role::Security] {
                        assert!(!rule.allows(role), "{} {}", rule.path, role);
                    }
                }
            }
        }
        assert_eq!(integrator_routes, 4);
    }
}
