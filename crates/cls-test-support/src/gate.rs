//! A TCP gate in front of a real server: forwards connections while open; when closed it
//! cuts the connections it carries and resets new ones. Fault tests use it to decide when a
//! client may reach a server again (e.g. only after the test re-created its subscriptions on
//! a restarted Pub/Sub emulator), without replacing the server.

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct TcpGate {
    port: u16,
    open: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl TcpGate {
    /// Listens on a free port and forwards to 127.0.0.1:`target` while open.
    pub async fn start(target: u16, open: bool) -> std::io::Result<TcpGate> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (tx, rx) = watch::channel(open);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !*rx.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Ok(TcpGate {
            port,
            open: tx,
            task,
        })
    }

    pub fn open(&self) {
        let _ = self.open.send(true);
    }

    /// Cuts every forwarded connection and refuses new ones until [`TcpGate::open`].
    pub fn close(&self) {
        let _ = self.open.send(false);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TcpGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}
