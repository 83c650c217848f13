//! crossproc end to end: a small real service, in real processes.
//!
//! A supervisor spawns worker processes, each with a channel already connected (no name to
//! race for), streams jobs to them and gathers results — one of them large, through shared
//! memory. Midway it kills one worker with SIGKILL, notices (the worker's result channel
//! closes), and hands that worker's unfinished jobs to the others. Then several client processes
//! talk to one named `IpcServer` at once, each identified by the kernel's credentials.
//!
//! Run: `cargo run --release --example demo`

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command};
use std::time::Instant;

use crossproc::ipc::{
    self, inherited_receiver, IpcClient, IpcCommandExt, IpcReceiverSet, IpcSelectionResult, IpcSender, IpcServer,
    IpcSharedMemory,
};
use serde::{Deserialize, Serialize};

const ROLE_VAR: &str = "CROSSPROC_DEMO_ROLE";
const SERVER_VAR: &str = "CROSSPROC_DEMO_SERVER";
const WORKERS: usize = 3;
const JOBS: u64 = 60;
const CLIENTS: usize = 4;
const BIG_JOB: u64 = 7;
const BIG_RESULT: usize = 64 << 20;

/// What the supervisor sends a worker.
#[derive(Serialize, Deserialize)]
enum ToWorker {
    /// Where to send results (a channel inside a message).
    Start(IpcSender<JobResult>),
    /// Sum the primes below `limit`.
    Job { id: u64, limit: u64 },
}

/// What a worker sends back.
#[derive(Serialize, Deserialize)]
struct JobResult {
    id: u64,
    value: u64,
    /// Big jobs also return a large buffer, shared instead of copied.
    blob: Option<IpcSharedMemory>,
}

/// What a client sends the service.
#[derive(Serialize, Deserialize)]
struct Query {
    question: String,
    reply: IpcSender<String>,
}

fn main() {
    match std::env::var(ROLE_VAR).as_deref() {
        Ok("worker") => worker(),
        Ok("client") => client(std::env::var(SERVER_VAR).expect("server name")),
        _ => supervisor(),
    }
}

fn worker() {
    let jobs = inherited_receiver::<ToWorker>().expect("inherited channel");
    let Ok(ToWorker::Start(results)) = jobs.recv() else { return };
    while let Ok(ToWorker::Job { id, limit }) = jobs.recv() {
        let value = (2..limit).filter(|&n| (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)).sum();
        let blob = (id == BIG_JOB).then(|| IpcSharedMemory::from_byte((id % 251) as u8, BIG_RESULT));
        if results.send(JobResult { id, value, blob }).is_err() {
            return;
        }
    }
}

fn client(server_name: String) {
    let service = IpcSender::<Query>::connect(server_name).expect("connect");
    let (reply, answers) = ipc::channel().expect("channel");
    let start = Instant::now();
    for i in 0..1000 {
        service.send(Query { question: format!("ping {i}"), reply: reply.clone() }).expect("send");
        assert_eq!(answers.recv().expect("answer"), format!("pong {i}"));
    }
    let per_round_trip = start.elapsed() / 1000;
    service.send(Query { question: format!("done in {per_round_trip:?} per round trip"), reply }).expect("send");
}

struct Worker {
    child: Child,
    jobs: IpcSender<ToWorker>,
    outstanding: Vec<(u64, u64)>,
    done: usize,
    killed: bool,
}

fn spawn_worker() -> (Child, IpcSender<ToWorker>) {
    Command::new(std::env::current_exe().expect("exe"))
        .env(ROLE_VAR, "worker")
        .spawn_with_channel::<ToWorker>()
        .expect("spawn worker")
}

fn supervisor() {
    let started = Instant::now();
    println!("crossproc demo: supervisor pid {}", std::process::id());

    // 1. Workers, each with a connected channel and its own result channel.
    let mut set = IpcReceiverSet::new().expect("set");
    let mut workers: BTreeMap<u64, Worker> = BTreeMap::new();
    for _ in 0..WORKERS {
        let (child, jobs) = spawn_worker();
        let (results_tx, results_rx) = ipc::channel::<JobResult>().expect("channel");
        jobs.send(ToWorker::Start(results_tx)).expect("start");
        let id = set.add(results_rx).expect("add");
        workers.insert(id, Worker { child, jobs, outstanding: Vec::new(), done: 0, killed: false });
    }
    println!("spawned {WORKERS} workers with inherited channels in {:?}", started.elapsed());

    // 2. Stream jobs round-robin; kill one worker once a third of the results are in.
    let ids: Vec<u64> = workers.keys().copied().collect();
    for job in 0..JOBS {
        let worker = workers.get_mut(&ids[job as usize % ids.len()]).expect("worker");
        let limit = 20_000 + job * 500;
        worker.jobs.send(ToWorker::Job { id: job, limit }).expect("send job");
        worker.outstanding.push((job, limit));
    }
    let victim = ids[1];
    let mut results: HashMap<u64, u64> = HashMap::new();
    let (mut reassigned, mut big_result) = (0, None);
    let streaming = Instant::now();
    while results.len() < JOBS as usize {
        for event in set.select().expect("select") {
            match event {
                IpcSelectionResult::MessageReceived(id, message) => {
                    let result = message.to::<JobResult>().expect("decode");
                    let worker = workers.get_mut(&id).expect("worker");
                    worker.outstanding.retain(|&(job, _)| job != result.id);
                    worker.done += 1;
                    if let Some(blob) = result.blob {
                        let start = Instant::now();
                        let expected = (result.id % 251) as u8;
                        assert!(blob.len() == BIG_RESULT && blob.iter().all(|&b| b == expected));
                        big_result = Some(start.elapsed());
                    }
                    results.insert(result.id, result.value);
                    if results.len() == JOBS as usize / 3 && !workers[&victim].killed {
                        let worker = workers.get_mut(&victim).expect("victim");
                        worker.child.kill().expect("kill"); // SIGKILL, mid-run
                        worker.killed = true;
                        println!(
                            "killed worker pid {} with {} jobs outstanding",
                            worker.child.id(),
                            worker.outstanding.len()
                        );
                    }
                }
                IpcSelectionResult::ChannelClosed(id) => {
                    let orphaned = std::mem::take(&mut workers.get_mut(&id).expect("worker").outstanding);
                    println!("noticed worker {id} is gone; reassigning {} jobs", orphaned.len());
                    let alive: Vec<u64> = workers.iter().filter(|(_, w)| !w.killed).map(|(&id, _)| id).collect();
                    for (n, (job, limit)) in orphaned.into_iter().enumerate() {
                        let worker = workers.get_mut(&alive[n % alive.len()]).expect("worker");
                        worker.jobs.send(ToWorker::Job { id: job, limit }).expect("resend");
                        worker.outstanding.push((job, limit));
                        reassigned += 1;
                    }
                }
            }
        }
    }
    let streaming = streaming.elapsed();
    for worker in workers.values_mut() {
        drop(std::mem::replace(&mut worker.jobs, ipc::channel().expect("channel").0));
        worker.child.wait().expect("wait");
    }

    // 3. A named service and several client processes at once.
    let (server, name) = IpcServer::<Query>::new().expect("server");
    let mut clients: Vec<Child> = (0..CLIENTS)
        .map(|_| {
            Command::new(std::env::current_exe().expect("exe"))
                .env(ROLE_VAR, "client")
                .env(SERVER_VAR, &name)
                .spawn()
                .expect("spawn")
        })
        .collect();
    let client_pids: Vec<u32> = clients.iter().map(Child::id).collect();
    let mut set = IpcReceiverSet::new().expect("set");
    let server_id = set.add_server(server).expect("add server");
    let mut who: HashMap<u64, u32> = HashMap::new();
    let mut reports = Vec::new();
    let mut served = 0u64;
    while reports.len() < CLIENTS {
        for event in set.select().expect("select") {
            match event {
                IpcSelectionResult::MessageReceived(id, message) if id == server_id => {
                    let client = message.to::<IpcClient<Query>>().expect("client");
                    assert!(client_pids.contains(&client.credentials.pid));
                    who.insert(set.add(client.receiver).expect("add"), client.credentials.pid);
                }
                IpcSelectionResult::MessageReceived(id, message) => {
                    let query = message.to::<Query>().expect("query");
                    if let Some(n) = query.question.strip_prefix("ping ") {
                        query.reply.send(format!("pong {n}")).expect("reply");
                        served += 1;
                    } else {
                        reports.push((who[&id], query.question));
                    }
                }
                IpcSelectionResult::ChannelClosed(_) => {}
            }
        }
    }
    for client in &mut clients {
        client.wait().expect("wait");
    }

    println!();
    println!("| what | result |");
    println!("|---|---|");
    for (id, worker) in &workers {
        let state = if worker.killed { "killed mid-run" } else { "finished" };
        println!("| worker {id} (pid {}) | {} jobs done, {state} |", worker.child.id(), worker.done);
    }
    println!(
        "| jobs | {} of {JOBS} complete, {reassigned} reassigned after the kill, in {streaming:?} |",
        results.len()
    );
    if let Some(check) = big_result {
        println!("| {} MiB result through shared memory | read and verified in {check:?} |", BIG_RESULT >> 20);
    }
    for (pid, report) in &reports {
        println!("| client pid {pid} (from SO_PEERCRED) | 1000 queries, {report} |");
    }
    println!("| service | {served} queries from {CLIENTS} concurrent client processes |");
    println!("\nall checks passed in {:?}", started.elapsed());
}
