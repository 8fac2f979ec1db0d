//! `guard events [--follow] [--json]`

use std::{path::Path, sync::mpsc};

use anyhow::bail;
use serde_json::Value;

use super::{call, finish, target};
use crate::{
    api::{client::Client, endpoint::Target, wire::Op},
    cli::EventsArgs,
    controller::ControlEvent,
};

pub fn run(args: EventsArgs, socket: Option<&Path>) -> i32 {
    let json = args.json.json;
    finish(json, || {
        let target = target(socket)?;
        if !args.follow {
            for path in target.sockets() {
                let events: Vec<ControlEvent> = match call(&path, Op::Events { follow: false }) {
                    Ok(v) => serde_json::from_value(v)?,
                    Err(_) if matches!(target, Target::Sessions(_)) => continue,
                    Err(e) => return Err(e),
                };
                for event in events {
                    print_event(&event, json)?;
                }
            }
            return Ok(());
        }
        let (tx, rx) = mpsc::channel::<anyhow::Result<ControlEvent>>();
        for path in target.sockets() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                if let Err(e) = follow(&path, &tx) {
                    let _ = tx.send(Err(e));
                }
            });
        }
        drop(tx);
        for event in rx {
            print_event(&event?, json)?;
        }
        bail!("the controller closed the event stream")
    })
}

fn follow(path: &Path, tx: &mpsc::Sender<anyhow::Result<ControlEvent>>) -> anyhow::Result<()> {
    let mut client = Client::connect(path)?;
    client.send(Op::Events { follow: true })?;
    while let Some(response) = client.receive()? {
        let mut value = response.into_result()?;
        if let Some(event) = value.get_mut("event").map(Value::take)
            && tx.send(Ok(serde_json::from_value(event)?)).is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

fn print_event(event: &ControlEvent, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(event)?);
        return Ok(());
    }
    let line = match event {
        ControlEvent::SessionStarted { time, session } => format!(
            "{time} session {} started: {} (uid {})",
            session.name,
            session.command.join(" "),
            session.uid
        ),
        ControlEvent::SessionEnded { time, session } => format!("{time} session {session} ended"),
        ControlEvent::HoldOpened { time, hold } => format!(
            "{time} hold {} in session {}: {} (rule {}) waiting for a decision",
            hold.id, hold.request.session, hold.request.action, hold.request.verdict.rule
        ),
        ControlEvent::Decision { record } => {
            let mut line = format!(
                "{} {} {} {} (rule {})",
                record.time, record.session, record.decision, record.what, record.rule
            );
            if let Some(outcome) = &record.outcome {
                line += &format!(" [{outcome}");
                if let Some(approver) = &record.approver {
                    line += &format!(" by {approver}");
                }
                if record.by_grant {
                    line += " by standing grant";
                }
                line += &format!(", held {} ms]", record.wait_ms);
            }
            line
        }
    };
    println!("{line}");
    Ok(())
}
