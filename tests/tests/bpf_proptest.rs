//! Property tests of the real `balancer` XDP program (loaded by lbd's own
//! data-plane code, run with BPF_PROG_TEST_RUN, root needed) against random
//! and mutated frames. Each property runs thousands of frames with a fresh
//! seed on every run; a failure is shrunk and printed as the smallest input.
//!
//! What is proved, for every frame tried:
//!
//! 1. **Empty tables**: any frame of 14..=600 random bytes runs without
//!    error and comes back `XDP_PASS`, byte for byte unchanged.
//! 2. **Populated tables** (TCP and UDP services on 10.0.0.100 ports 80/53
//!    and a port-0 UDP service on 10.0.0.101; mh, rr and wrr): random frames,
//!    raw or with IPv4 header fields laid over them, run without error and
//!    end in `XDP_PASS`, `XDP_DROP` or `XDP_TX`, never `XDP_ABORTED`. A frame
//!    that is not IPv4, or whose IPv4 destination is no VIP, comes back
//!    `XDP_PASS` unchanged.
//! 3. **Mutated valid frames**: TCP SYN/ACK and UDP frames to VIPs and to
//!    other hosts, with bytes flipped, truncated (with or without a total
//!    length to match), extended and header fields (ethertype, version/IHL,
//!    total length, protocol, fragment bits, destination) set at random, obey
//!    the rules of every run:
//!    - `XDP_PASS` returns the frame byte for byte;
//!    - `XDP_TX` (DR forwarding) keeps the length and changes only the MACs,
//!      to the director's as source and a real server's as destination —
//!      unless a mutation made an ICMP echo request to a VIP, which the
//!      director answers (addresses and MACs swapped, type echo reply);
//!    - `XDP_TX` and `XDP_DROP` happen only to frames for a VIP address;
//!    - nothing else (no error, no `XDP_ABORTED`).
//!
//! The rules of every run (the last list) are checked in properties 1 and 2
//! as well. `PROPTEST_RNG_SEED=<n>` replays a fixed seed.
//!
//! A bug these properties found is kept at the end as regression tests:
//! the TCP/UDP header was bounds-checked against the frame, not the IP
//! packet's own length, so Ethernet padding turned a truncated VIP packet
//! (passed) into a forwarded one.

use std::cell::Cell;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use lb_tests::fixture::*;
use lb_tests::packet::*;
use lb_userspace::config::{Protocol, Scheduler};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// The second VIP: a port-0 UDP service (every port).
const VIP2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);
const VIPS: [Ipv4Addr; 2] = [VIP, VIP2];
/// Addresses next to the VIPs that are not VIPs: a host, a real server, the
/// neighbours of both VIPs.
const NOT_VIPS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(10, 0, 0, 3),
    Ipv4Addr::new(10, 0, 0, 11),
    Ipv4Addr::new(10, 0, 0, 99),
    Ipv4Addr::new(10, 0, 0, 102),
];

const ETH_P_IP: [u8; 2] = [0x08, 0x00];

/// The populated tables of properties 2 and 3.
fn populated() -> Fixture {
    Fixture::new(vec![
        service(
            VIP,
            80,
            Protocol::Tcp,
            Scheduler::Mh,
            &[(1, 1), (2, 1), (3, 1)],
        ),
        service(
            VIP,
            53,
            Protocol::Udp,
            Scheduler::Rr,
            &[(1, 1), (2, 1), (3, 1)],
        ),
        service(
            VIP,
            53,
            Protocol::Tcp,
            Scheduler::Wrr,
            &[(1, 1), (2, 2), (3, 3)],
        ),
        service(VIP2, 0, Protocol::Udp, Scheduler::Wrr, &[(4, 2), (5, 1)]),
    ])
}

// ---------------------------------------------------------------------------
// What the properties check

/// The IPv4 destination of a frame that is Ethernet + IPv4 far enough to
/// have one (whatever the rest of its header says).
fn ipv4_dst(frame: &[u8]) -> Option<Ipv4Addr> {
    if frame.len() < 14 + 20 || frame[12..14] != ETH_P_IP {
        return None;
    }
    let d: [u8; 4] = frame[30..34].try_into().unwrap();
    Some(d.into())
}

fn is_for_vip(frame: &[u8]) -> bool {
    ipv4_dst(frame).is_some_and(|d| VIPS.contains(&d))
}

/// An IPv4 ICMP echo request (type 8), as far as the frame goes.
fn is_echo_request(frame: &[u8]) -> bool {
    if ipv4_dst(frame).is_none() || frame[14 + 9] != 1 {
        return false;
    }
    let icmp = 14 + (frame[14] & 0x0f) as usize * 4;
    frame.get(icmp) == Some(&8)
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::new();
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 16 == 0 {
            s.push('\n');
        }
        let _ = write!(s, "{b:02x} ");
    }
    s
}

/// Runs one frame and checks the rules every run must obey (module doc);
/// returns the action. A failure shows the frame in hex.
fn run_checked(f: &Fixture, input: &[u8]) -> Result<u32, TestCaseError> {
    check_run(f, input).map_err(|e| match e {
        TestCaseError::Fail(why) => TestCaseError::fail(format!(
            "{why}\nframe ({} bytes):\n{}",
            input.len(),
            hex(input)
        )),
        reject => reject,
    })
}

fn check_run(f: &Fixture, input: &[u8]) -> Result<u32, TestCaseError> {
    let o = f
        .try_run(input)
        .map_err(|e| TestCaseError::fail(format!("BPF_PROG_TEST_RUN failed: {e:#}")))?;
    match o.action {
        XDP_PASS => prop_assert!(
            o.frame == input,
            "a passed frame must come back byte for byte; out:\n{}",
            hex(&o.frame)
        ),
        XDP_TX if is_echo_request(input) => {
            // A mutation made an ICMP echo request to a VIP: the director
            // answers it in place.
            prop_assert!(is_for_vip(input), "XDP_TX of a frame for no VIP");
            prop_assert_eq!(o.frame.len(), input.len(), "a reply keeps the length");
            prop_assert_eq!(dst_mac(&o.frame), src_mac(input), "back to the sender");
            prop_assert_eq!(src_mac(&o.frame), dst_mac(input));
            prop_assert_eq!(&o.frame[26..30], &input[30..34], "from the VIP");
            prop_assert_eq!(&o.frame[30..34], &input[26..30], "to the sender");
            let icmp = 14 + (input[14] & 0x0f) as usize * 4;
            prop_assert_eq!(o.frame[icmp], 0, "an echo reply");
        }
        XDP_TX => {
            prop_assert!(is_for_vip(input), "XDP_TX of a frame for no VIP");
            prop_assert_eq!(o.frame.len(), input.len(), "DR keeps the length");
            prop_assert!(
                o.frame[12..] == input[12..],
                "DR changes only the MACs; out:\n{}",
                hex(&o.frame)
            );
            prop_assert_eq!(src_mac(&o.frame), DIRECTOR_MAC);
            let dst = dst_mac(&o.frame);
            prop_assert!(
                dst[..5] == real_mac(0)[..5],
                "destination MAC {:02x?} is no real server's",
                dst
            );
        }
        XDP_DROP => prop_assert!(is_for_vip(input), "XDP_DROP of a frame for no VIP"),
        other => {
            return Err(TestCaseError::fail(format!(
                "action {other} (XDP_ABORTED = {XDP_ABORTED})"
            )));
        }
    }
    Ok(o.action)
}

/// How often each action was seen, to show (and check) that the generators
/// reach the forwarding path, not only the early exits.
#[derive(Default)]
struct Actions {
    pass: Cell<u32>,
    drop: Cell<u32>,
    tx: Cell<u32>,
}

impl Actions {
    fn note(&self, action: u32) {
        let c = match action {
            XDP_PASS => &self.pass,
            XDP_DROP => &self.drop,
            _ => &self.tx,
        };
        c.set(c.get() + 1);
    }
}

impl std::fmt::Debug for Actions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PASS {} DROP {} TX {}",
            self.pass.get(),
            self.drop.get(),
            self.tx.get()
        )
    }
}

/// Runs `test` on `cases` values of `strategy`, with a fresh seed, and
/// panics with the shrunk failing value. Failures are not persisted to
/// files: a bug found becomes a named regression test below.
fn check<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // A shrunk example within seconds, not minutes, on a loaded machine.
        max_shrink_time: 10_000,
        ..Config::default()
    });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------
// Generators

/// Any bytes, as long as the kernel hands them to XDP: BPF_PROG_TEST_RUN
/// refuses frames shorter than an Ethernet header.
fn random_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 14..=600)
}

/// A destination: mostly a VIP, else a neighbour of one, else anything.
fn destination() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        3 => select(VIPS.to_vec()),
        1 => select(NOT_VIPS.to_vec()),
        1 => any::<u32>().prop_map(Ipv4Addr::from),
    ]
}

/// A destination port: a service's port, or anything.
fn service_port() -> impl Strategy<Value = u16> {
    prop_oneof![Just(80), Just(53), any::<u16>()]
}

/// TCP, UDP, or any other IP protocol number.
fn ip_protocol() -> impl Strategy<Value = u8> {
    prop_oneof![Just(6), Just(17), any::<u8>()]
}

/// IPv4 version + IHL: mostly a plain or optioned header, sometimes junk.
fn version_ihl() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => Just(0x45),
        1 => 0x40u8..=0x4f,
        1 => any::<u8>(),
    ]
}

/// Flags + fragment offset: none, DF, MF, or anything (offset ≠ 0 mostly).
fn fragment_bits() -> impl Strategy<Value = u16> {
    prop_oneof![Just(0), Just(0x4000), Just(0x2000), any::<u16>()]
}

/// The IPv4 total length to write into a header.
#[derive(Clone, Debug)]
enum TotalLen {
    /// The frame's length less the Ethernet header (no padding).
    Frame,
    /// Anything.
    Any(u16),
}

fn total_len() -> impl Strategy<Value = TotalLen> {
    prop_oneof![
        3 => Just(TotalLen::Frame),
        1 => any::<u16>().prop_map(TotalLen::Any),
    ]
}

/// IPv4 header fields (and the destination port) laid over random bytes, so
/// that random frames get past the parser's first checks often enough.
#[derive(Clone, Debug)]
struct Ipv4Overlay {
    version_ihl: u8,
    total_len: TotalLen,
    fragment: u16,
    protocol: u8,
    dst: Ipv4Addr,
    dport: u16,
}

fn ipv4_overlay() -> impl Strategy<Value = Ipv4Overlay> {
    (
        version_ihl(),
        total_len(),
        fragment_bits(),
        ip_protocol(),
        destination(),
        service_port(),
    )
        .prop_map(
            |(version_ihl, total_len, fragment, protocol, dst, dport)| Ipv4Overlay {
                version_ihl,
                total_len,
                fragment,
                protocol,
                dst,
                dport,
            },
        )
}

/// Writes `bytes` at `at`, as far as the frame reaches.
fn put(frame: &mut [u8], at: usize, bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        if let Some(x) = frame.get_mut(at + i) {
            *x = b;
        }
    }
}

impl Ipv4Overlay {
    fn apply(&self, frame: &mut [u8]) {
        let total = match self.total_len {
            TotalLen::Frame => (frame.len() - 14) as u16,
            TotalLen::Any(n) => n,
        };
        put(frame, 12, &ETH_P_IP);
        put(frame, 14, &[self.version_ihl]);
        put(frame, 16, &total.to_be_bytes());
        put(frame, 20, &self.fragment.to_be_bytes());
        put(frame, 23, &[self.protocol]);
        put(frame, 30, &self.dst.octets());
        let ihl = (self.version_ihl & 0x0f) as usize;
        if ihl >= 5 {
            put(frame, 14 + ihl * 4 + 2, &self.dport.to_be_bytes());
        }
    }
}

/// Random frames: raw bytes (almost never IPv4), or bytes with an IPv4
/// header laid over them.
fn random_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => random_bytes(),
        3 => (random_bytes(), ipv4_overlay()).prop_map(|(mut frame, ip)| {
            ip.apply(&mut frame);
            frame
        }),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    TcpSyn,
    TcpAck,
    Udp,
}

/// A well-formed TCP or UDP frame, built with `Pkt`.
#[derive(Clone, Debug)]
struct ValidFrame {
    kind: Kind,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    payload: Vec<u8>,
}

impl ValidFrame {
    fn build(&self) -> Vec<u8> {
        let p = Pkt::to(self.dst, self.dport)
            .from(self.src, self.sport)
            .payload(&self.payload);
        match self.kind {
            Kind::TcpSyn => p.tcp(SYN),
            Kind::TcpAck => p.tcp(ACK),
            Kind::Udp => p.udp(),
        }
    }
}

fn valid_frame() -> impl Strategy<Value = ValidFrame> {
    (
        select(vec![Kind::TcpSyn, Kind::TcpAck, Kind::Udp]),
        any::<u32>().prop_map(Ipv4Addr::from),
        any::<u16>(),
        destination(),
        service_port(),
        vec(any::<u8>(), 0..=64),
    )
        .prop_map(|(kind, src, sport, dst, dport, payload)| ValidFrame {
            kind,
            src,
            sport,
            dst,
            dport,
            payload,
        })
}

/// One change to a frame. Positions and lengths are taken modulo the frame
/// so that every mutation applies to every frame; header fields are written
/// as far as the frame reaches.
#[derive(Clone, Debug)]
enum Mutation {
    /// XOR the byte at `at % len` with `xor`.
    FlipByte {
        at: u16,
        xor: u8,
    },
    /// Cut the frame to `14 + to % (len - 13)` bytes (never below Ethernet).
    Truncate {
        to: u16,
    },
    /// Truncate as above and set the IPv4 total length to match: a short
    /// packet whose header says so.
    CutPacket {
        to: u16,
    },
    /// Append bytes (Ethernet padding, trailing junk).
    Extend(Vec<u8>),
    Ethertype(u16),
    VersionIhl(u8),
    TotalLen(u16),
    /// Total length `len - 14 - n`: a packet shorter than its frame.
    TotalLenShortBy(u8),
    Protocol(u8),
    Fragment(u16),
    Destination(Ipv4Addr),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<u16>(), 1..=u8::MAX).prop_map(|(at, xor)| Mutation::FlipByte { at, xor }),
        2 => any::<u16>().prop_map(|to| Mutation::Truncate { to }),
        1 => any::<u16>().prop_map(|to| Mutation::CutPacket { to }),
        2 => vec(any::<u8>(), 1..=64).prop_map(Mutation::Extend),
        1 => prop_oneof![
            select(vec![0x0800u16, 0x86dd, 0x0806, 0x8100, 0x88a8]),
            any::<u16>(),
        ]
        .prop_map(Mutation::Ethertype),
        1 => version_ihl().prop_map(Mutation::VersionIhl),
        1 => any::<u16>().prop_map(Mutation::TotalLen),
        1 => (1..=40u8).prop_map(Mutation::TotalLenShortBy),
        1 => ip_protocol().prop_map(Mutation::Protocol),
        1 => fragment_bits().prop_map(Mutation::Fragment),
        1 => destination().prop_map(Mutation::Destination),
    ]
}

impl Mutation {
    fn apply(&self, frame: &mut Vec<u8>) {
        let len = frame.len();
        match self {
            Mutation::FlipByte { at, xor } => frame[*at as usize % len] ^= xor,
            Mutation::Truncate { to } => frame.truncate(14 + *to as usize % (len - 13)),
            Mutation::CutPacket { to } => {
                frame.truncate(14 + *to as usize % (len - 13));
                let total = (frame.len() - 14) as u16;
                put(frame, 16, &total.to_be_bytes());
            }
            Mutation::Extend(bytes) => frame.extend_from_slice(bytes),
            Mutation::Ethertype(t) => put(frame, 12, &t.to_be_bytes()),
            Mutation::VersionIhl(v) => put(frame, 14, &[*v]),
            Mutation::TotalLen(n) => put(frame, 16, &n.to_be_bytes()),
            Mutation::TotalLenShortBy(n) => {
                let total = (len - 14).saturating_sub(*n as usize) as u16;
                put(frame, 16, &total.to_be_bytes());
            }
            Mutation::Protocol(p) => put(frame, 23, &[*p]),
            Mutation::Fragment(bits) => put(frame, 20, &bits.to_be_bytes()),
            Mutation::Destination(d) => put(frame, 30, &d.octets()),
        }
    }
}

/// A valid frame and one to four mutations of it.
fn mutated_frame() -> impl Strategy<Value = (ValidFrame, Vec<Mutation>)> {
    (valid_frame(), vec(mutation(), 1..=4))
}

fn mutate(base: &ValidFrame, mutations: &[Mutation]) -> Vec<u8> {
    let mut frame = base.build();
    for m in mutations {
        m.apply(&mut frame);
    }
    frame
}

// ---------------------------------------------------------------------------
// The properties

#[test]
fn empty_tables_pass_every_frame_unchanged() {
    assert!(lb_tests::have_root(), "BPF fixtures need root");
    let f = Fixture::new(vec![]);
    check(5000, random_frame(), |frame| {
        let action = run_checked(&f, &frame)?;
        prop_assert_eq!(action, XDP_PASS);
        Ok(())
    });
}

#[test]
fn populated_tables_pass_every_frame_not_for_a_vip_unchanged() {
    assert!(lb_tests::have_root(), "BPF fixtures need root");
    let f = populated();
    let seen = Actions::default();
    check(8000, random_frame(), |frame| {
        let action = run_checked(&f, &frame)?;
        seen.note(action);
        if !is_for_vip(&frame) {
            prop_assert_eq!(action, XDP_PASS, "not IPv4 or not for a VIP");
        }
        Ok(())
    });
    eprintln!("random frames: {seen:?}");
    assert!(seen.tx.get() > 0, "no random frame was forwarded: {seen:?}");
}

#[test]
fn mutated_valid_frames_are_passed_intact_forwarded_by_mac_or_dropped_for_a_vip() {
    assert!(lb_tests::have_root(), "BPF fixtures need root");
    let f = populated();
    let seen = Actions::default();
    check(15000, mutated_frame(), |(base, mutations)| {
        let frame = mutate(&base, &mutations);
        seen.note(run_checked(&f, &frame)?);
        Ok(())
    });
    eprintln!("mutated frames: {seen:?}");
    assert!(
        seen.tx.get() > 0,
        "no mutated frame was forwarded: {seen:?}"
    );
    assert!(
        seen.drop.get() > 0,
        "no mutated frame was dropped: {seen:?}"
    );
}

/// The generators themselves: mutations never go below an Ethernet header,
/// and the overlay really makes IPv4 frames for VIPs (else property 2 would
/// prove little).
#[test]
fn generators_make_frames_the_kernel_accepts() {
    check(2000, mutated_frame(), |(base, mutations)| {
        prop_assert!(mutate(&base, &mutations).len() >= 14);
        Ok(())
    });
    let vip_frames = Cell::new(0);
    check(2000, random_frame(), |frame| {
        prop_assert!((14..=600).contains(&frame.len()));
        vip_frames.set(vip_frames.get() + is_for_vip(&frame) as u32);
        Ok(())
    });
    assert!(
        vip_frames.get() > 500,
        "{} of 2000 for a VIP",
        vip_frames.get()
    );
}

// ---------------------------------------------------------------------------
// Regressions: bugs these properties found (now fixed)

/// Whether the frame is Ethernet + IPv4 and holds the whole IPv4 packet (by
/// its total length), so that bytes appended to it are padding after it.
fn whole_ipv4_packet(frame: &[u8]) -> bool {
    ipv4_dst(frame).is_some() && {
        let total = u16::from_be_bytes([frame[16], frame[17]]) as usize;
        total <= frame.len() - 14
    }
}

/// Bytes after the IP packet: zeros (Ethernet padding) or anything.
fn padding() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![vec(Just(0u8), 1..=46), vec(any::<u8>(), 1..=46)]
}

/// Ethernet pads every frame to 60 bytes and may carry trailing bytes after
/// the IP packet: what the program does with a packet must not depend on
/// them (same action, and a forwarded frame still differs only in MACs).
#[test]
fn ethernet_padding_never_changes_the_action() {
    let f = populated();
    let padded_frames = (mutated_frame(), padding());
    check(5000, padded_frames, |((base, mutations), padding)| {
        let frame = mutate(&base, &mutations);
        if !whole_ipv4_packet(&frame) {
            return Ok(()); // appended bytes would not be padding after the packet
        }
        let plain = run_checked(&f, &frame)?;
        let padded = [frame.as_slice(), &padding].concat();
        let action = run_checked(&f, &padded)?;
        prop_assert_eq!(
            action,
            plain,
            "padding changed the action of\n{}\npadded:\n{}",
            hex(&frame),
            hex(&padded)
        );
        Ok(())
    });
}

/// A TCP SYN to VIP:80 cut inside its TCP header, with the IPv4 total
/// length saying so (32 bytes: 12 of TCP header), in a 60-byte frame as it
/// arrives from the wire. Without the padding it passes (bpf_fixtures'
/// `truncated_tcp_header_to_vip_passes`); with it, the program reads the
/// rest of the TCP header (flags) from the padding and forwards it.
#[test]
fn truncated_tcp_header_to_vip_in_a_padded_frame_passes() {
    let f = populated();
    let mut frame = Pkt::to(VIP, 80).tcp(SYN)[..14 + 20 + 12].to_vec();
    frame[16..18].copy_from_slice(&32u16.to_be_bytes());
    fix_ipv4_checksum(&mut frame);
    assert_eq!(f.run(&frame).action, XDP_PASS, "unpadded: passed");
    frame.resize(60, 0);
    let o = f.run(&frame);
    assert_eq!(o.action, XDP_PASS, "padded: must pass too");
    assert_eq!(o.frame, frame);
}

/// A UDP packet to the port-0 VIP with no UDP header at all (total length
/// 20), in a 60-byte frame: the program takes ports 0/0 from the padding and
/// forwards it to a real server.
#[test]
fn udp_packet_without_udp_header_in_a_padded_frame_passes() {
    let f = populated();
    let mut frame = Pkt::to(VIP2, 53).udp()[..14 + 20].to_vec();
    frame[16..18].copy_from_slice(&20u16.to_be_bytes());
    fix_ipv4_checksum(&mut frame);
    frame.resize(60, 0);
    let o = f.run(&frame);
    assert_eq!(o.action, XDP_PASS);
    assert_eq!(o.frame, frame);
}

/// A mutated TCP SYN whose protocol byte became ICMP and whose source port
/// (2048 = type 8, code 0) an echo request: the director answers it, which
/// the rules of every run first did not allow for (found by the mutation
/// property; the program was right).
#[test]
fn a_mutation_into_an_echo_request_to_a_vip_is_answered() {
    let f = populated();
    let mut frame = vec![0u8; 92];
    frame[..52].copy_from_slice(&[
        0x02, 0, 0, 0, 0, 0x03, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00, 0x45, 0x00, //
        0x00, 0x4e, 0, 0, 0x40, 0, 0x40, 0x01, 0x30, 0x47, 0, 0, 0, 0, 0x0a, 0, //
        0, 0x64, 0x08, 0, 0, 0x50, 0, 0, 0x03, 0xe8, 0, 0, 0, 0, 0x50, 0x02, //
        0xfa, 0xf0, 0x9e, 0x30,
    ]);
    assert!(is_echo_request(&frame));
    assert_eq!(run_checked(&f, &frame).unwrap(), XDP_TX);
}
