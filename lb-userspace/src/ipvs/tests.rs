//! Encoding and decoding checked against bytes worked out by hand from
//! include/uapi/linux/ip_vs.h and the netlink wire format (struct nlattr:
//! u16 length including the 4-byte header, u16 type; values padded to 4;
//! NLA_F_NESTED = 0x8000). Numbers are little endian (x86) except ports
//! and addresses. The `nla` helper below only frames bytes; every value
//! and type number in the tests is written out by hand.

use std::net::IpAddr;

use netlink_packet_core::{
    Emitable, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_generic::GenlMessage;

use super::consts::*;
use super::*;

/// One attribute: length (header included), type, value, padding.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((value.len() + 4) as u16).to_le_bytes());
    v.extend_from_slice(&kind.to_le_bytes());
    v.extend_from_slice(value);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// genlmsghdr (cmd, version 1, reserved) followed by the attributes.
fn genl(cmd: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![cmd, 1, 0, 0];
    v.extend(cat(attrs));
    v
}

/// What lbd emits for a message: genl header and attributes.
fn emitted(msg: IpvsMessage) -> Vec<u8> {
    let genl = GenlMessage::from_payload(msg);
    let mut buf = vec![0u8; genl.buffer_len()];
    genl.emit(&mut buf);
    buf
}

/// Parses a genl payload as the kernel's reply would be parsed.
fn parsed(bytes: &[u8]) -> IpvsMessage {
    use netlink_packet_core::ParseableParametrized;
    GenlMessage::<IpvsMessage>::parse_with_param(bytes, 0x20)
        .expect("decodes")
        .payload
}

fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(addr: &str, port: u16) -> ServiceId {
    ServiceId {
        protocol: IPPROTO_TCP,
        addr: v4(addr),
        port,
    }
}

/// AF_INET, IPPROTO_TCP, 10.0.0.100, port 80: the service-naming attributes.
fn svc_id_10_0_0_100_80() -> Vec<Vec<u8>> {
    vec![
        nla(1, &[2, 0]), // IPVS_SVC_ATTR_AF = AF_INET (2)
        nla(2, &[6, 0]), // IPVS_SVC_ATTR_PROTOCOL = IPPROTO_TCP (6)
        nla(3, &[10, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), // ADDR, nf_inet_addr
        nla(4, &[0, 80]), // IPVS_SVC_ATTR_PORT, big endian
    ]
}

#[test]
fn command_numbers_follow_ip_vs_h() {
    let expected = [
        (IpvsCmd::NewService, 1),
        (IpvsCmd::SetService, 2),
        (IpvsCmd::DelService, 3),
        (IpvsCmd::GetService, 4),
        (IpvsCmd::NewDest, 5),
        (IpvsCmd::SetDest, 6),
        (IpvsCmd::DelDest, 7),
        (IpvsCmd::GetDest, 8),
        (IpvsCmd::SetConfig, 12),
        (IpvsCmd::GetConfig, 13),
        (IpvsCmd::SetInfo, 14),
        (IpvsCmd::GetInfo, 15),
    ];
    for (cmd, n) in expected {
        assert_eq!(u8::from(cmd), n, "{cmd:?}");
        assert_eq!(IpvsCmd::try_from(n).unwrap(), cmd);
    }
    // NEW_DAEMON (9) and FLUSH (17) are never used: refused, not misread.
    assert!(IpvsCmd::try_from(9).is_err());
    assert!(IpvsCmd::try_from(17).is_err());
}

#[test]
fn new_service_whole_netlink_message() {
    let spec = ServiceSpec {
        id: tcp("10.0.0.1", 80),
        scheduler: "wrr".into(),
        flags: 0,
        timeout: 0,
        netmask: 32,
    };
    let mut genl = GenlMessage::from_payload(IpvsMessage::new_service(&spec));
    genl.set_resolved_family_id(0x1f);
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = 7;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(genl));
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        // nlmsghdr: length 104, type = family id 0x1f, flags REQUEST|ACK (0x5), seq 7, pid 0
        0x68, 0, 0, 0,  0x1f, 0,  0x05, 0,  7, 0, 0, 0,  0, 0, 0, 0,
        // genlmsghdr: IPVS_CMD_NEW_SERVICE (1), version 1
        1, 1, 0, 0,
        // IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, length 84
        0x54, 0, 0x01, 0x80,
        6, 0, 1, 0,  2, 0, 0, 0,            // AF_INET
        6, 0, 2, 0,  6, 0, 0, 0,            // IPPROTO_TCP
        20, 0, 3, 0,  10, 0, 0, 1,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0, // 10.0.0.1
        6, 0, 4, 0,  0, 80, 0, 0,           // port 80, big endian
        8, 0, 6, 0,  b'w', b'r', b'r', 0,   // "wrr\0"
        12, 0, 7, 0,  0, 0, 0, 0,  0xff, 0xff, 0xff, 0xff, // flags 0, mask ~0
        8, 0, 8, 0,  0, 0, 0, 0,            // timeout 0
        8, 0, 9, 0,  0xff, 0xff, 0xff, 0xff, // netmask 255.255.255.255
    ];
    assert_eq!(buf, expected);
}

#[test]
fn set_service_persistent_with_scheduler_flags_ipv4() {
    let spec = ServiceSpec {
        id: tcp("10.0.0.100", 80),
        scheduler: "sh".into(),
        flags: IP_VS_SVC_F_PERSISTENT | IP_VS_SVC_F_SCHED_SH_FALLBACK | IP_VS_SVC_F_SCHED_SH_PORT,
        timeout: 50,
        netmask: 24,
    };
    let mut svc = svc_id_10_0_0_100_80();
    svc.extend([
        nla(6, b"sh\0"),
        // flags 0x19 = PERSISTENT (1) | SCHED1 (8) | SCHED2 (0x10); mask ~0
        nla(7, &[0x19, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
        nla(8, &[50, 0, 0, 0]),
        nla(9, &[255, 255, 255, 0]), // 255.255.255.0, big endian
    ]);
    let expected = genl(2, &[nla(0x8001, &cat(&svc))]);
    assert_eq!(emitted(IpvsMessage::set_service(&spec)), expected);
    assert_eq!(parsed(&expected), IpvsMessage::set_service(&spec));
}

#[test]
fn new_service_ipv6_udp_mh_with_prefix_netmask() {
    let addr: IpAddr = "2001:db8::1".parse().unwrap();
    let spec = ServiceSpec {
        id: ServiceId {
            protocol: IPPROTO_UDP,
            addr,
            port: 53,
        },
        scheduler: "mh".into(),
        flags: IP_VS_SVC_F_PERSISTENT | IP_VS_SVC_F_SCHED_MH_PORT,
        timeout: 300,
        netmask: 64,
    };
    let svc = cat(&[
        nla(1, &[10, 0]), // AF_INET6 = 10
        nla(2, &[17, 0]), // IPPROTO_UDP = 17
        nla(
            3,
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ),
        nla(4, &[0, 53]),
        nla(6, b"mh\0"),
        nla(7, &[0x11, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]), // PERSISTENT | SCHED2 (mh-port)
        nla(8, &[0x2c, 0x01, 0, 0]),                      // 300 s
        nla(9, &[64, 0, 0, 0]),                           // prefix 64, host order
    ]);
    let expected = genl(1, &[nla(0x8001, &svc)]);
    assert_eq!(emitted(IpvsMessage::new_service(&spec)), expected);
}

#[test]
fn del_service_names_the_service_only() {
    let expected = genl(3, &[nla(0x8001, &cat(&svc_id_10_0_0_100_80()))]);
    let msg = IpvsMessage::del_service(&tcp("10.0.0.100", 80));
    assert_eq!(emitted(msg.clone()), expected);
    assert_eq!(parsed(&expected), msg);
}

#[test]
fn get_service_get_config_get_info_carry_no_attributes() {
    assert_eq!(emitted(IpvsMessage::get_services()), vec![4, 1, 0, 0]);
    assert_eq!(emitted(IpvsMessage::get_config()), vec![13, 1, 0, 0]);
    assert_eq!(emitted(IpvsMessage::get_info()), vec![15, 1, 0, 0]);
    // A dump request's nlmsghdr flags: REQUEST (1) | DUMP (0x300).
    assert_eq!(NLM_F_REQUEST | NLM_F_DUMP, 0x301);
}

fn dr_dest() -> DestSpec {
    DestSpec {
        addr: v4("10.0.0.11"),
        port: 80,
        forward: Forward::Route,
        weight: 3,
        u_threshold: 0,
        l_threshold: 0,
    }
}

#[test]
fn new_dest_direct_routing() {
    let dest = cat(&[
        nla(1, &[10, 0, 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), // ADDR
        nla(2, &[0, 80]),                                            // PORT
        nla(11, &[2, 0]),                                            // ADDR_FAMILY = AF_INET
        nla(3, &[3, 0, 0, 0]), // FWD_METHOD = IP_VS_CONN_F_DROUTE (3)
        nla(4, &[3, 0, 0, 0]), // WEIGHT 3
        nla(5, &[0, 0, 0, 0]), // U_THRESH
        nla(6, &[0, 0, 0, 0]), // L_THRESH
    ]);
    let expected = genl(
        5,
        &[
            nla(0x8001, &cat(&svc_id_10_0_0_100_80())),
            nla(0x8002, &dest), // IPVS_CMD_ATTR_DEST | NLA_F_NESTED
        ],
    );
    let msg = IpvsMessage::new_dest(&tcp("10.0.0.100", 80), &dr_dest());
    assert_eq!(emitted(msg.clone()), expected);
    assert_eq!(parsed(&expected), msg);
}

#[test]
fn set_dest_nat_with_thresholds_and_tunnel_method() {
    let nat = DestSpec {
        addr: v4("192.168.1.2"),
        port: 8080,
        forward: Forward::Masq,
        weight: 0,
        u_threshold: 1000,
        l_threshold: 200,
    };
    let dest = cat(&[
        nla(1, &[192, 168, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        nla(2, &[0x1f, 0x90]), // 8080 big endian
        nla(11, &[2, 0]),
        nla(3, &[0, 0, 0, 0]),       // IP_VS_CONN_F_MASQ (0)
        nla(4, &[0, 0, 0, 0]),       // weight 0 (inhibited)
        nla(5, &[0xe8, 0x03, 0, 0]), // 1000
        nla(6, &[0xc8, 0, 0, 0]),    // 200
    ]);
    let expected = genl(
        6,
        &[
            nla(0x8001, &cat(&svc_id_10_0_0_100_80())),
            nla(0x8002, &dest),
        ],
    );
    assert_eq!(
        emitted(IpvsMessage::set_dest(&tcp("10.0.0.100", 80), &nat)),
        expected
    );
    // TUN is IP_VS_CONN_F_TUNNEL (2).
    assert_eq!(Forward::Tunnel.conn_flags(), 2);
    assert_eq!(Forward::from_conn_flags(2).unwrap(), Forward::Tunnel);
    assert_eq!(Forward::from_conn_flags(0x103).unwrap(), Forward::Route);
}

#[test]
fn del_dest_and_get_dest() {
    let dest = cat(&[
        nla(1, &[10, 0, 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        nla(2, &[0, 80]),
        nla(11, &[2, 0]),
    ]);
    let svc = nla(0x8001, &cat(&svc_id_10_0_0_100_80()));
    let id = tcp("10.0.0.100", 80);
    assert_eq!(
        emitted(IpvsMessage::del_dest(&id, v4("10.0.0.11"), 80)),
        genl(7, &[svc.clone(), nla(0x8002, &dest)])
    );
    assert_eq!(emitted(IpvsMessage::get_dests(&id)), genl(8, &[svc]));
}

#[test]
fn set_config_timeouts() {
    let t = Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    let expected = genl(
        12,
        &[
            nla(4, &[0x84, 0x03, 0, 0]), // IPVS_CMD_ATTR_TIMEOUT_TCP = 900
            nla(5, &[120, 0, 0, 0]),     // TIMEOUT_TCP_FIN
            nla(6, &[0x2c, 0x01, 0, 0]), // TIMEOUT_UDP = 300
        ],
    );
    assert_eq!(emitted(IpvsMessage::set_config(&t)), expected);
    // GET_CONFIG's answer is a SET_CONFIG message with the same attributes.
    assert_eq!(parsed(&expected).timeouts(), t);
}

#[test]
fn get_info_reply() {
    // SET_INFO: IPVS_INFO_ATTR_VERSION (1) = 0x010201, CONN_TAB_SIZE (2) = 4096.
    let reply = genl(
        14,
        &[nla(1, &[0x01, 0x02, 0x01, 0]), nla(2, &[0, 0x10, 0, 0])],
    );
    let info = parsed(&reply).info();
    assert_eq!(
        info,
        Info {
            version: 0x010201,
            conn_tab_size: 4096
        }
    );
    assert_eq!(info.version_string(), "1.2.1");
}

/// The 32-bit stats nest as ip_vs_genl_fill_stats writes it: u32 conns,
/// packets and rates, u64 bytes.
fn stats32(conns: u32, inbytes: u64) -> Vec<u8> {
    cat(&[
        nla(1, &conns.to_le_bytes()),
        nla(2, &10u32.to_le_bytes()),
        nla(3, &9u32.to_le_bytes()),
        nla(4, &inbytes.to_le_bytes()),
        nla(5, &700u64.to_le_bytes()),
        nla(6, &1u32.to_le_bytes()),
        nla(7, &2u32.to_le_bytes()),
        nla(8, &3u32.to_le_bytes()),
        nla(9, &4u32.to_le_bytes()),
        nla(10, &5u32.to_le_bytes()),
    ])
}

/// The 64-bit nest: every counter u64, with an empty PAD (11) first.
fn stats64(conns: u64, inbytes: u64) -> Vec<u8> {
    let mut v = nla(11, &[]);
    for (kind, value) in [
        (1, conns),
        (2, 10),
        (3, 9),
        (4, inbytes),
        (5, 700),
        (6, 1),
        (7, 2),
        (8, 3),
        (9, 4),
        (10, 5),
    ] {
        v.extend(nla(kind, &value.to_le_bytes()));
    }
    v
}

#[test]
fn service_dump_entry_decodes() {
    let mut svc = svc_id_10_0_0_100_80();
    svc.extend([
        nla(6, b"wlc\0"),
        // PERSISTENT | HASHED (the kernel's own bit), mask ~0
        nla(7, &[3, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
        nla(8, &[0x2c, 0x01, 0, 0]),
        nla(9, &[255, 255, 255, 0]),
        nla(0x800a, &stats32(7, 5000)),
        nla(0x800c, &stats64(0x1_0000_0007, 0x2_0000_0000)),
    ]);
    let reply = genl(1, &[nla(0x8001, &cat(&svc))]);
    let entry = parsed(&reply).service_entry().unwrap();
    assert_eq!(
        entry.spec,
        ServiceSpec {
            id: tcp("10.0.0.100", 80),
            scheduler: "wlc".into(),
            flags: IP_VS_SVC_F_PERSISTENT,
            timeout: 300,
            netmask: 24,
        }
    );
    // STATS64 wins over the 32-bit nest.
    assert_eq!(entry.stats.conns, 0x1_0000_0007);
    assert_eq!(entry.stats.inbytes, 0x2_0000_0000);
    assert_eq!(
        (
            entry.stats.inpkts,
            entry.stats.outpkts,
            entry.stats.outbytes
        ),
        (10, 9, 700)
    );
    assert_eq!(
        (
            entry.stats.cps,
            entry.stats.inpps,
            entry.stats.outpps,
            entry.stats.inbps,
            entry.stats.outbps
        ),
        (1, 2, 3, 4, 5)
    );
}

#[test]
fn service_with_only_32bit_stats_and_ipv6_prefix() {
    let svc = cat(&[
        nla(1, &[10, 0]),
        nla(2, &[6, 0]),
        nla(3, &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64]),
        nla(4, &[0x01, 0xbb]), // 443
        nla(6, b"rr\0"),
        nla(7, &[2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
        nla(8, &[0, 0, 0, 0]),
        nla(9, &[128, 0, 0, 0]),
        nla(0x800a, &stats32(42, 99)),
    ]);
    let entry = parsed(&genl(1, &[nla(0x8001, &svc)]))
        .service_entry()
        .unwrap();
    assert_eq!(entry.spec.id.addr, "fd00::64".parse::<IpAddr>().unwrap());
    assert_eq!(entry.spec.id.port, 443);
    assert_eq!(entry.spec.flags, 0);
    assert_eq!(entry.spec.netmask, 128);
    assert_eq!((entry.stats.conns, entry.stats.inbytes), (42, 99));
}

#[test]
fn dest_dump_entry_decodes() {
    // As ip_vs_genl_fill_dest (6.1) writes it, tunnel attributes included.
    let dest = cat(&[
        nla(1, &[10, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        nla(2, &[0, 80]),
        nla(3, &[0, 0, 0, 0]),       // MASQ
        nla(4, &[5, 0, 0, 0]),       // weight 5
        nla(13, &[0]),               // TUN_TYPE (unused here)
        nla(14, &[0, 0]),            // TUN_PORT
        nla(15, &[0, 0]),            // TUN_FLAGS
        nla(5, &[0, 0, 0, 0]),       // U_THRESH
        nla(6, &[0, 0, 0, 0]),       // L_THRESH
        nla(7, &[4, 0, 0, 0]),       // ACTIVE_CONNS
        nla(8, &[0x10, 0x27, 0, 0]), // INACT_CONNS 10000
        nla(9, &[1, 0, 0, 0]),       // PERSIST_CONNS
        nla(11, &[2, 0]),            // ADDR_FAMILY
        nla(0x800a, &stats32(3, 300)),
        nla(0x800c, &stats64(3, 300)),
    ]);
    let entry = parsed(&genl(5, &[nla(0x8002, &dest)]))
        .dest_entry(v4("10.0.0.100"))
        .unwrap();
    assert_eq!(
        entry.spec,
        DestSpec {
            addr: v4("10.0.0.12"),
            port: 80,
            forward: Forward::Masq,
            weight: 5,
            u_threshold: 0,
            l_threshold: 0,
        }
    );
    assert_eq!(
        (
            entry.active_conns,
            entry.inactive_conns,
            entry.persist_conns
        ),
        (4, 10000, 1)
    );
    assert_eq!((entry.stats.conns, entry.stats.inbytes), (3, 300));
}

#[test]
fn dest_without_family_takes_the_services() {
    let dest = cat(&[
        nla(1, &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]),
        nla(2, &[0, 80]),
        nla(3, &[2, 0, 0, 0]), // TUNNEL
        nla(4, &[1, 0, 0, 0]),
    ]);
    let entry = parsed(&genl(5, &[nla(0x8002, &dest)]))
        .dest_entry("fd00::1".parse().unwrap())
        .unwrap();
    assert_eq!(entry.spec.addr, "fd00::2".parse::<IpAddr>().unwrap());
    assert_eq!(entry.spec.forward, Forward::Tunnel);
}

#[test]
fn hostile_replies_are_errors_not_panics() {
    use netlink_packet_core::ParseableParametrized;
    let parse = |b: &[u8]| GenlMessage::<IpvsMessage>::parse_with_param(b, 0x20);
    // An attribute claiming more bytes than there are.
    assert!(parse(&[1, 1, 0, 0, 0x40, 0, 1, 0x80, 0, 0]).is_err());
    // A port of 1 byte, an address of 5 bytes, flags of 4.
    for bad in [
        nla(4, &[80]),
        nla(3, &[1, 2, 3, 4, 5]),
        nla(7, &[0, 0, 0, 0]),
    ] {
        assert!(parse(&genl(1, &[nla(0x8001, &bad)])).is_err());
    }
    // An unknown command.
    assert!(parse(&[99, 1, 0, 0]).is_err());
    // A service without address family is refused when read.
    let no_af = genl(1, &[nla(0x8001, &nla(4, &[0, 80]))]);
    assert!(parsed(&no_af).service_entry().is_err());
    // A destination with an unknown forwarding method (5).
    let bad_fwd = genl(
        5,
        &[nla(
            0x8002,
            &cat(&[nla(1, &[10, 0, 0, 1]), nla(3, &[5, 0, 0, 0])]),
        )],
    );
    assert!(parsed(&bad_fwd).dest_entry(v4("10.0.0.100")).is_err());
}

#[test]
fn every_request_round_trips() {
    let spec = ServiceSpec {
        id: tcp("10.0.0.1", 443),
        scheduler: "lblcr".into(),
        flags: IP_VS_SVC_F_PERSISTENT,
        timeout: 60,
        netmask: 16,
    };
    let id = spec.id;
    for msg in [
        IpvsMessage::new_service(&spec),
        IpvsMessage::set_service(&spec),
        IpvsMessage::del_service(&id),
        IpvsMessage::get_services(),
        IpvsMessage::new_dest(&id, &dr_dest()),
        IpvsMessage::set_dest(&id, &dr_dest()),
        IpvsMessage::del_dest(&id, v4("10.0.0.11"), 443),
        IpvsMessage::get_dests(&id),
        IpvsMessage::set_config(&Timeouts {
            tcp: 1,
            tcp_fin: 2,
            udp: 3,
        }),
        IpvsMessage::get_config(),
        IpvsMessage::get_info(),
    ] {
        assert_eq!(parsed(&emitted(msg.clone())), msg);
    }
    // A full service entry reads back as what was sent.
    let back = parsed(&emitted(IpvsMessage::new_service(&spec)))
        .service_entry()
        .unwrap();
    assert_eq!(back.spec, spec);
}

/// This machine kind's kernel has no IPVS: connecting must say so and
/// name the module. Where IPVS exists (the VM tier), it connects.
#[test]
fn missing_ipvs_names_the_module() {
    let has_ipvs = std::path::Path::new("/proc/net/ip_vs").exists();
    match IpvsClient::connect() {
        Ok(_) => assert!(has_ipvs, "connected without /proc/net/ip_vs"),
        Err(e) => {
            assert!(!has_ipvs, "IPVS present but: {e}");
            assert!(matches!(e, IpvsError::NotAvailable), "{e:?}");
            let text = e.to_string();
            assert!(text.contains("ip_vs"), "{text}");
            assert!(text.contains("modprobe ip_vs"), "{text}");
        }
    }
}
