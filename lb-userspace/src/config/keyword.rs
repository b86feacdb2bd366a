//! Keyword enums (MASTER, DR, wrr, TCP, xdp, …). CONTRACT.md accepts them in
//! any letter case; they print in the spelling keepalived and ipvsadm use.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Declares a keyword enum with case-insensitive parsing, `Display`,
/// `Serialize` and `Deserialize`, all from one table of spellings.
macro_rules! keyword {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in the order the documentation lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The canonical spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
                    .ok_or_else(|| {
                        let expected: Vec<&str> = $name::ALL.iter().map(|k| k.as_str()).collect();
                        format!("unknown {} `{}`, expected one of {}", $what, s, expected.join(", "))
                    })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(KeywordVisitor::<$name>::new($what))
            }
        }
    };
}

/// Shared visitor: any YAML scalar is read as text, then matched.
struct KeywordVisitor<T> {
    what: &'static str,
    _marker: std::marker::PhantomData<T>,
}

impl<T> KeywordVisitor<T> {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            _marker: std::marker::PhantomData,
        }
    }
}

impl<T: FromStr<Err = String>> Visitor<'_> for KeywordVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a {} keyword", self.what)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

keyword! {
    /// Which data plane forwards packets.
    #[derive(Default)]
    pub enum DataplaneKind ("dataplane") {
        Xdp => "xdp",
        Ipvs => "ipvs",
        /// XDP when the kernel and driver allow it, else IPVS.
        #[default]
        Auto => "auto",
    }
}

keyword! {
    /// How the XDP program is attached.
    #[derive(Default)]
    pub enum XdpMode ("xdp_mode") {
        Driver => "driver",
        Skb => "skb",
        /// Driver mode when supported, else SKB (generic) mode.
        #[default]
        Auto => "auto",
    }
}

keyword! {
    /// Transport protocol of a virtual server.
    #[derive(Default)]
    pub enum Protocol ("protocol") {
        #[default]
        Tcp => "TCP",
        Udp => "UDP",
    }
}

keyword! {
    /// IPVS schedulers, with ipvsadm's names.
    pub enum Scheduler ("scheduler") {
        Rr => "rr",
        Wrr => "wrr",
        Lc => "lc",
        Wlc => "wlc",
        Sed => "sed",
        Nq => "nq",
        Sh => "sh",
        Dh => "dh",
        Mh => "mh",
        Lblc => "lblc",
        Lblcr => "lblcr",
        Fo => "fo",
        Ovf => "ovf",
    }
}

keyword! {
    /// Scheduler flags (ipvsadm `-b`, keepalived's `sh-port` etc.).
    pub enum SchedulerFlag ("scheduler flag") {
        /// sh: hash the source port too.
        ShPort => "sh-port",
        /// sh: if the hashed real is unavailable, try the next one.
        ShFallback => "sh-fallback",
        /// mh: hash the source port too.
        MhPort => "mh-port",
        /// mh: if the hashed real is unavailable, try the next one.
        MhFallback => "mh-fallback",
    }
}

keyword! {
    /// Forwarding method (keepalived's lb_kind).
    pub enum Method ("method") {
        Dr => "DR",
        Nat => "NAT",
        Tun => "TUN",
    }
}

keyword! {
    /// Initial VRRP state; the election decides after start.
    #[derive(Default)]
    pub enum VrrpState ("state") {
        Master => "MASTER",
        #[default]
        Backup => "BACKUP",
    }
}

keyword! {
    /// VRRPv2 authentication type.
    #[derive(Default)]
    pub enum AuthType ("authentication type") {
        #[default]
        Pass => "PASS",
        Ah => "AH",
    }
}

keyword! {
    /// Health check kinds, with keepalived's names less the `_CHECK` suffix.
    pub enum CheckType ("check type") {
        Tcp => "TCP",
        Http => "HTTP",
        Https => "HTTPS",
        Dns => "DNS",
        Smtp => "SMTP",
        Script => "SCRIPT",
        Ping => "PING",
        Udp => "UDP",
    }
}

keyword! {
    /// Record types a DNS check may query (keepalived's DNS_CHECK set).
    #[derive(Default)]
    pub enum DnsRecordType ("DNS record type") {
        #[default]
        A => "A",
        Ns => "NS",
        Cname => "CNAME",
        Soa => "SOA",
        Mx => "MX",
        Txt => "TXT",
        Aaaa => "AAAA",
    }
}

keyword! {
    /// HTTP version a check speaks; keepalived's default is 1.0.
    #[derive(Default)]
    pub enum HttpVersion ("http_protocol") {
        #[default]
        Http10 => "1.0",
        Http11 => "1.1",
    }
}
