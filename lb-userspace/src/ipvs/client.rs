//! A blocking IPVS client on a generic-netlink socket: resolves the
//! "IPVS" family once, then sends one request at a time and reads its
//! answer (an acknowledgement, one reply, or a dump).

use std::fmt::Debug;
use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkDeserializable, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};

use super::consts::IPVS_GENL_NAME;
use super::message::IpvsMessage;
use super::types::{DestEntry, DestSpec, Info, ServiceEntry, ServiceId, ServiceSpec, Timeouts};

#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The generic-netlink family is not registered: no IPVS in the kernel.
    #[error(
        "the kernel has no IPVS (generic netlink family \"IPVS\" not found): \
         load the ip_vs kernel module (`modprobe ip_vs`) or use `dataplane: xdp`"
    )]
    NotAvailable,
    #[error("{what}: {source}")]
    Kernel {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("generic netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("{what}: undecodable reply: {reason}")]
    Decode { what: String, reason: String },
}

pub struct IpvsClient {
    socket: Socket,
    family_id: u16,
    seq: u32,
}

impl IpvsClient {
    /// Opens a generic-netlink socket and looks up the IPVS family.
    pub fn connect() -> Result<Self, IpvsError> {
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(IpvsError::Socket)?;
        socket.bind_auto().map_err(IpvsError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(IpvsError::Socket)?;
        let mut client = IpvsClient {
            socket,
            family_id: 0,
            seq: 0,
        };
        client.family_id = client.resolve_family()?;
        Ok(client)
    }

    fn resolve_family(&mut self) -> Result<u16, IpvsError> {
        let request = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(IPVS_GENL_NAME.into())],
        });
        let replies = match self.exchange(request, false, "looking up the IPVS netlink family") {
            Err(IpvsError::Kernel { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                return Err(IpvsError::NotAvailable);
            }
            other => other?,
        };
        replies
            .iter()
            .flat_map(|m| &m.payload.nlas)
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or(IpvsError::NotAvailable)
    }

    /// Sends one request and collects the messages that answer it, until
    /// the acknowledgement (a request) or NLMSG_DONE (a dump).
    fn exchange<F>(&mut self, payload: F, dump: bool, what: &str) -> Result<Vec<F>, IpvsError>
    where
        F: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(IpvsError::Socket)?;

        let decode = |reason: String| IpvsError::Decode {
            what: what.to_string(),
            reason,
        };
        let mut replies = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full().map_err(IpvsError::Socket)?;
            let mut offset = 0;
            while offset < data.len() {
                let len = NetlinkBuffer::new_checked(&data[offset..])
                    .map_err(|e| decode(e.to_string()))?
                    .length() as usize;
                let msg = NetlinkMessage::<F>::deserialize(&data[offset..offset + len])
                    .map_err(|e| decode(e.to_string()))?;
                offset += (len + 3) & !3;
                if msg.header.sequence_number != self.seq {
                    continue; // a late answer to an earlier request
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(e) if e.code.is_none() => return Ok(replies),
                    NetlinkPayload::Error(e) => {
                        return Err(IpvsError::Kernel {
                            what: what.to_string(),
                            source: e.to_io(),
                        });
                    }
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    _ => {}
                }
            }
        }
    }

    /// One IPVS request; `what` names it in errors ("adding IPVS service …").
    fn ipvs(
        &mut self,
        msg: IpvsMessage,
        dump: bool,
        what: String,
    ) -> Result<Vec<IpvsMessage>, IpvsError> {
        let mut genl = GenlMessage::from_payload(msg);
        genl.set_resolved_family_id(self.family_id);
        Ok(self
            .exchange(genl, dump, &what)?
            .into_iter()
            .map(|m| m.payload)
            .collect())
    }

    pub fn add_service(&mut self, spec: &ServiceSpec) -> Result<(), IpvsError> {
        self.ipvs(
            IpvsMessage::new_service(spec),
            false,
            format!("adding IPVS service {}", show(&spec.id)),
        )?;
        Ok(())
    }

    pub fn edit_service(&mut self, spec: &ServiceSpec) -> Result<(), IpvsError> {
        self.ipvs(
            IpvsMessage::set_service(spec),
            false,
            format!("editing IPVS service {}", show(&spec.id)),
        )?;
        Ok(())
    }

    pub fn del_service(&mut self, id: &ServiceId) -> Result<(), IpvsError> {
        self.ipvs(
            IpvsMessage::del_service(id),
            false,
            format!("removing IPVS service {}", show(id)),
        )?;
        Ok(())
    }

    /// Every service in the kernel (GET_SERVICE dump).
    pub fn services(&mut self) -> Result<Vec<ServiceEntry>, IpvsError> {
        let what = || "listing IPVS services".to_string();
        self.ipvs(IpvsMessage::get_services(), true, what())?
            .iter()
            .map(|m| {
                m.service_entry().map_err(|e| IpvsError::Decode {
                    what: what(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    pub fn add_dest(&mut self, id: &ServiceId, dest: &DestSpec) -> Result<(), IpvsError> {
        self.ipvs(
            IpvsMessage::new_dest(id, dest),
            false,
            format!(
                "adding real {} to IPVS service {}",
                show_addr(dest.addr, dest.port),
                show(id)
            ),
        )?;
        Ok(())
    }

    pub fn edit_dest(&mut self, id: &ServiceId, dest: &DestSpec) -> Result<(), IpvsError> {
        self.ipvs(
            IpvsMessage::set_dest(id, dest),
            false,
            format!(
                "editing real {} of IPVS service {}",
                show_addr(dest.addr, dest.port),
                show(id)
            ),
        )?;
        Ok(())
    }

    pub fn del_dest(&mut self, id: &ServiceId, addr: IpAddr, port: u16) -> Result<(), IpvsError> {
        self.ipvs(
            IpvsMessage::del_dest(id, addr, port),
            false,
            format!(
                "removing real {} from IPVS service {}",
                show_addr(addr, port),
                show(id)
            ),
        )?;
        Ok(())
    }

    /// The destinations of one service (GET_DEST dump).
    pub fn dests(&mut self, id: &ServiceId) -> Result<Vec<DestEntry>, IpvsError> {
        let what = || format!("listing the reals of IPVS service {}", show(id));
        self.ipvs(IpvsMessage::get_dests(id), true, what())?
            .iter()
            .map(|m| {
                m.dest_entry(id.addr).map_err(|e| IpvsError::Decode {
                    what: what(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    pub fn set_timeouts(&mut self, t: &Timeouts) -> Result<(), IpvsError> {
        self.ipvs(
            IpvsMessage::set_config(t),
            false,
            "setting IPVS timeouts".to_string(),
        )?;
        Ok(())
    }

    pub fn timeouts(&mut self) -> Result<Timeouts, IpvsError> {
        let replies = self.ipvs(
            IpvsMessage::get_config(),
            false,
            "reading IPVS timeouts".to_string(),
        )?;
        Ok(replies.first().map(|m| m.timeouts()).unwrap_or_default())
    }

    pub fn info(&mut self) -> Result<Info, IpvsError> {
        let replies = self.ipvs(
            IpvsMessage::get_info(),
            false,
            "reading IPVS info".to_string(),
        )?;
        Ok(replies.first().map(|m| m.info()).unwrap_or_default())
    }
}

fn show_addr(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// ipvsadm's way of naming a service: "TCP 10.0.0.1:80".
fn show(id: &ServiceId) -> String {
    let proto = match id.protocol {
        super::types::IPPROTO_TCP => "TCP",
        super::types::IPPROTO_UDP => "UDP",
        _ => "IP",
    };
    format!("{proto} {}", show_addr(id.addr, id.port))
}
