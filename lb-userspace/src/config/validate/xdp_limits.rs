//! What the XDP data plane can hold (lb-common's MAX_VIPS, MAX_REALS,
//! MAX_REALS_PER_VIP), checked here so that `lbd --check` finds a config
//! that would load and then fail to apply, with the position of what does
//! not fit. `XdpDataplane::check` stays as the backstop at run time.

use lb_common::{MAX_REALS, MAX_REALS_PER_VIP, MAX_VIPS};

use crate::config::error::{Errors, Span};

/// Told with every limit: kernel IPVS has none of them.
const USE_IPVS: &str = "set `global.dataplane: ipvs` for more";

/// What one virtual server takes in the XDP maps: one VIP id (whatever its
/// prefix or family: one `ServiceKey`, as `desired.services` counts) and one
/// slot per backend.
pub(super) struct Footprint<'a> {
    pub name: &'a str,
    pub span: Span,
    /// Real servers in config order, then the sorry server unless it is one
    /// of them: it takes a slot of its own while it stands in.
    pub backends: Vec<Backend>,
}

pub(super) struct Backend {
    pub span: Span,
    pub sorry: bool,
}

/// Reports the first virtual server over MAX_VIPS, each one's first backend
/// over MAX_REALS_PER_VIP, and the first backend over the total slots.
pub(super) fn check(servers: &[Footprint], errors: &mut Errors) {
    if let Some(vs) = servers.get(MAX_VIPS as usize) {
        errors.push(
            vs.span,
            format!(
                "virtual server `{}` is one too many: the XDP data plane holds {MAX_VIPS} virtual services ({USE_IPVS})",
                vs.name
            ),
        );
    }
    for vs in servers {
        per_service(vs, errors);
    }
    total(servers, errors);
}

fn per_service(vs: &Footprint, errors: &mut Errors) {
    let Some(b) = vs.backends.get(MAX_REALS_PER_VIP as usize) else {
        return;
    };
    errors.push(
        b.span,
        format!(
            "{} is number {} in it{}: the XDP data plane holds {MAX_REALS_PER_VIP} real servers per virtual service ({USE_IPVS})",
            who(b, vs.name),
            MAX_REALS_PER_VIP + 1,
            sorry_note(b)
        ),
    );
}

/// Slot 0 means "none", so MAX_REALS - 1 backends fit over all services.
fn total(servers: &[Footprint], errors: &mut Errors) {
    let usable = MAX_REALS - 1;
    let over = servers
        .iter()
        .flat_map(|vs| vs.backends.iter().map(move |b| (vs.name, b)))
        .nth(usable as usize);
    if let Some((name, b)) = over {
        errors.push(
            b.span,
            format!(
                "{} is number {MAX_REALS} over all virtual servers{}: the XDP data plane holds {usable} real servers in all ({USE_IPVS})",
                who(b, name),
                sorry_note(b)
            ),
        );
    }
}

fn who(b: &Backend, name: &str) -> String {
    let kind = if b.sorry { "sorry" } else { "real" };
    format!("{kind} server of `{name}`")
}

fn sorry_note(b: &Backend) -> &'static str {
    if b.sorry {
        " (it takes a real server's place while it stands in)"
    } else {
        ""
    }
}
