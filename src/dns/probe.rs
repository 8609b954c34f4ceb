//! `kcluster node dns-probe NAME` (hidden): one A query for NAME, by default to the cluster DNS
//! Service address, exit 0 once it answers with an address. `kcluster create --wait` runs it in
//! the server node to know that DNS answers through the Service (proxy and DNS both up).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// The name to look up (A record).
    pub name: String,
    /// The DNS server to ask.
    #[arg(long, default_value = "10.96.0.10:53")]
    pub server: SocketAddr,
    /// How long to wait for the answer.
    #[arg(long, default_value = "1s", value_parser = crate::cli::duration::parse)]
    pub timeout: Duration,
}

pub fn run(args: ProbeArgs) -> Result<()> {
    let name = Name::from_ascii(&args.name).with_context(|| format!("bad name {:?}", args.name))?;
    let mut query = Message::query();
    query.metadata.id = std::process::id() as u16;
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name, RecordType::A));
    let bytes = query.to_vec().context("cannot encode the query")?;
    let socket = UdpSocket::bind("0.0.0.0:0").context("cannot open a UDP socket")?;
    socket.set_read_timeout(Some(args.timeout))?;
    socket
        .send_to(&bytes, args.server)
        .with_context(|| format!("cannot send to {}", args.server))?;
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .with_context(|| format!("no answer from {} within {:?}", args.server, args.timeout))?;
    let answer = Message::from_vec(&buf[..n]).context("the answer is not DNS")?;
    if answer.metadata.message_type != MessageType::Response
        || answer.metadata.op_code != OpCode::Query
    {
        bail!("{} sent something that is not an answer", args.server);
    }
    if answer.metadata.response_code != ResponseCode::NoError || answer.answers.is_empty() {
        bail!(
            "{} answered {} with {}",
            args.server,
            args.name,
            answer.metadata.response_code
        );
    }
    for record in &answer.answers {
        println!("{}", record.data);
    }
    Ok(())
}
