//! Who is calling: the peer address, or — only when the peer is one of `TRUSTED_PROXIES` — the
//! address a proxy put in `X-Forwarded-For` (the rightmost one no trusted proxy added).

use std::net::IpAddr;

use ipnet::IpNet;

/// The client's address. An `X-Forwarded-For` from an untrusted peer is ignored (anyone can
/// write that header); from a trusted proxy it is read right to left, skipping trusted hops.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_for.unwrap_or_default().rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // A hop that is not an address: stop at the last one we could read.
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// The client of a request (see [`client_ip`]).
pub fn of_request(req: &actix_web::HttpRequest, trusted: &[IpNet]) -> IpAddr {
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    client_ip(peer, forwarded, trusted)
}

/// Whether `ip` is in one of `allowed`.
pub fn is_allowed(ip: IpAddr, allowed: &[IpNet]) -> bool {
    allowed.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let kicc: IpAddr = "203.233.72.66".parse().unwrap();
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        let trusted = nets(&["10.0.0.0/8"]);
        // From the proxy: the address it saw.
        assert_eq!(client_ip(proxy, Some("203.233.72.66"), &trusted), kicc);
        // A spoofed left part added by the client is not believed: the proxy appends the real peer.
        assert_eq!(
            client_ip(proxy, Some("203.233.72.66, 198.51.100.7"), &trusted),
            stranger
        );
        // Chained trusted proxies are skipped.
        assert_eq!(
            client_ip(proxy, Some("203.233.72.66, 10.0.0.9"), &trusted),
            kicc
        );
        // From anyone else the header is ignored.
        assert_eq!(
            client_ip(stranger, Some("203.233.72.66"), &trusted),
            stranger
        );
        assert_eq!(client_ip(stranger, Some("203.233.72.66"), &[]), stranger);
        // Garbage stops the walk.
        assert_eq!(client_ip(proxy, Some("nonsense"), &trusted), proxy);
    }

    #[test]
    fn allow_lists_take_addresses_and_blocks() {
        let allowed = nets(&["203.233.72.66/32", "61.33.205.151/32", "127.0.0.0/8"]);
        assert!(is_allowed("203.233.72.66".parse().unwrap(), &allowed));
        assert!(is_allowed("127.0.0.2".parse().unwrap(), &allowed));
        assert!(!is_allowed("203.233.72.67".parse().unwrap(), &allowed));
        assert!(!is_allowed("::1".parse().unwrap(), &allowed));
    }
}
