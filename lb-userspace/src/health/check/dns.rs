//! DNS_CHECK: one query (`name`, `type`; default SOA of `.`) sent over UDP
//! to the real server; it passes when a reply with the query's id comes
//! back without an error code. Replies with another id are ignored (a
//! stray or forged datagram cannot pass the check).

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use super::{Outcome, Target};
use crate::config::{DnsCheck, DnsRecordType};

fn record_type(t: DnsRecordType) -> RecordType {
    match t {
        DnsRecordType::A => RecordType::A,
        DnsRecordType::Ns => RecordType::NS,
        DnsRecordType::Cname => RecordType::CNAME,
        DnsRecordType::Soa => RecordType::SOA,
        DnsRecordType::Mx => RecordType::MX,
        DnsRecordType::Txt => RecordType::TXT,
        DnsRecordType::Aaaa => RecordType::AAAA,
    }
}

/// The query datagram and its id.
pub fn query(check: &DnsCheck, id: u16) -> Result<Vec<u8>, String> {
    let name = Name::from_ascii(&check.name).map_err(|e| format!("name `{}`: {e}", check.name))?;
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(false)
        .add_query(Query::query(name, record_type(check.record_type)));
    msg.to_vec().map_err(|e| format!("encoding the query: {e}"))
}

pub async fn check(t: &Target, check: &DnsCheck) -> Outcome {
    let id: u16 = rand::random();
    let datagram = query(check, id)?;
    let socket = super::connect_udp(t).await?;
    socket
        .send(&datagram)
        .await
        .map_err(|e| format!("send to {}: {e}", t.addr))?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(|e| format!("{}: {e}", t.addr))?;
        let Ok(reply) = Message::from_vec(&buf[..n]) else {
            continue; // garbage: keep waiting for the real answer
        };
        if reply.id() != id || reply.message_type() != MessageType::Response {
            continue;
        }
        return match reply.response_code() {
            ResponseCode::NoError => Ok(format!("NOERROR, {} answer(s)", reply.answer_count())),
            code => Err(format!("DNS {code}")),
        };
    }
}
