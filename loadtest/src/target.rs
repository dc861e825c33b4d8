//! Where traffic may go: loopback only.
//!
//! Every scenario checks `--url` here before it sends a byte: the host must be
//! `localhost` or an address in 127.0.0.0/8 (or `[::1]`), and a name must also
//! resolve to loopback addresses only. Client sockets can be spread over
//! several 127.0.0.x source addresses, so many connections do not run out of
//! local ports (each source address has its own ephemeral port range).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use reqwest::Url;
use tokio::net::{TcpSocket, TcpStream};

/// A checked server address.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port` without a trailing slash.
    pub base: String,
    /// `ws://host:port`.
    pub ws_base: String,
    /// The resolved loopback socket address.
    pub addr: SocketAddr,
}

/// Whether an IP is loopback in the sense this tool allows.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

/// Parses and checks `url`: http only, loopback host only.
pub async fn resolve(url: &str) -> Result<Target, String> {
    let parsed = Url::parse(url).map_err(|e| format!("--url {url:?}: {e}"))?;
    if parsed.scheme() != "http" {
        return Err(format!(
            "--url {url:?}: only http:// is supported (the server is local)"
        ));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("--url {url:?}: no host"))?;
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| format!("--url {url:?}: no port"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = match bare.parse::<IpAddr>() {
        Ok(ip) if is_loopback(ip) => SocketAddr::new(ip, port),
        Ok(ip) => {
            return Err(format!(
                "refusing --url {url:?}: {ip} is not a loopback address (only 127.0.0.0/8, ::1 and localhost)"
            ));
        }
        Err(_) if bare.eq_ignore_ascii_case("localhost") => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
                .await
                .map_err(|e| format!("cannot resolve localhost: {e}"))?
                .collect();
            if addrs.is_empty() || addrs.iter().any(|a| !is_loopback(a.ip())) {
                return Err(format!(
                    "refusing --url {url:?}: localhost resolves to {addrs:?}, not only loopback"
                ));
            }
            // Prefer IPv4: the source-address spreading works on 127.0.0.x.
            *addrs.iter().find(|a| a.is_ipv4()).unwrap_or(&addrs[0])
        }
        Err(_) => {
            return Err(format!(
                "refusing --url {url:?}: host {host:?} is not localhost or a loopback address"
            ));
        }
    };
    let authority = match parsed.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    Ok(Target {
        base: format!("http://{authority}"),
        ws_base: format!("ws://{authority}"),
        addr,
    })
}

/// Source addresses for client sockets: `127.0.0.2 ..= 127.0.0.(1+n)`, or none
/// (let the kernel choose) when `n` is 0 or the server is not on IPv4.
pub fn source_ips(n: usize, target: &Target) -> Vec<IpAddr> {
    if n == 0 || !target.addr.is_ipv4() {
        return Vec::new();
    }
    (0..n.min(250))
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)))
        .collect()
}

/// How many source addresses `connections` sockets need: one per 20,000
/// (the default ephemeral range holds about 28,000 ports).
pub fn auto_sources(connections: usize) -> usize {
    connections.div_ceil(20_000).max(1)
}

/// Connects to the target, from `source` when given.
pub async fn connect(target: &Target, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let stream = match source {
        Some(ip) => {
            let socket = if ip.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(target.addr).await?
        }
        None => TcpStream::connect(target.addr).await?,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_loopback_is_accepted() {
        assert!(resolve("http://127.0.0.1:8080").await.is_ok());
        assert!(resolve("http://127.3.4.5:1").await.is_ok());
        assert!(resolve("http://[::1]:8080").await.is_ok());
        assert!(resolve("http://localhost:8080").await.is_ok());
        for bad in [
            "http://10.0.0.1:8080",
            "http://192.168.1.2",
            "http://8.8.8.8",
            "http://example.com",
            "http://128.0.0.1",
            "https://127.0.0.1",
            "http://[::2]:80",
        ] {
            assert!(resolve(bad).await.is_err(), "{bad} accepted");
        }
    }

    #[tokio::test]
    async fn target_keeps_the_authority() {
        let t = resolve("http://localhost:18080/").await.unwrap();
        assert_eq!(t.base, "http://localhost:18080");
        assert_eq!(t.ws_base, "ws://localhost:18080");
        assert!(is_loopback(t.addr.ip()));
    }
}
