//! Who is calling: the peer address, or — only when the peer is one of `TRUSTED_PROXIES` — the
//! address a proxy put in `X-Forwarded-For` (the rightmost one no trusted proxy added). Every
//! `X-Forwarded-For` header line counts, joined in order: a proxy that appends its
//! own line (HAProxy does) leaves a forged first line on the far left, where it is not believed.

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

/// The client of a request (see [`client_ip`]). The only reader of `X-Forwarded-For` in the app.
pub fn of_request(req: &actix_web::HttpRequest, trusted: &[IpNet]) -> IpAddr {
    let peer = req
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    client_ip(peer, forwarded_for(req.headers()).as_deref(), trusted)
}

/// Every `X-Forwarded-For` line, joined with ", " in the order received (RFC 9110 §5.3: a
/// repeated field is one list). A line that is not text reads as a hop that is no address, so
/// the walk stops there rather than skipping it.
fn forwarded_for(headers: &actix_web::http::header::HeaderMap) -> Option<String> {
    let mut lines = headers
        .get_all("x-forwarded-for")
        .map(|v| v.to_str().unwrap_or("?"));
    let first = lines.next()?;
    Some(lines.fold(first.to_owned(), |mut all, line| {
        all.push_str(", ");
        all.push_str(line);
        all
    }))
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
    fn every_forwarded_for_line_counts_and_a_forged_first_line_is_not_believed() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client of a request from the proxy 10.0.0.5 with these header lines.
        let client = |lines: &[&str]| {
            let req = lines
                .iter()
                .fold(
                    actix_web::test::TestRequest::default()
                        .peer_addr("10.0.0.5:40000".parse().unwrap()),
                    |req, line| req.append_header(("X-Forwarded-For", *line)),
                )
                .to_http_request();
            of_request(&req, &trusted).to_string()
        };
        // The stranger wrote the first line; the proxy appended the peer it saw as its own line.
        assert_eq!(client(&["203.233.72.66", "198.51.100.7"]), "198.51.100.7");
        // Lines with several hops each, and a chained trusted proxy in the last line.
        assert_eq!(
            client(&["1.1.1.1, 203.233.72.66", "198.51.100.7, 10.0.0.9"]),
            "198.51.100.7"
        );
        // One line: as before. No header: the proxy itself.
        assert_eq!(client(&["203.233.72.66"]), "203.233.72.66");
        assert_eq!(client(&[]), "10.0.0.5");
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
