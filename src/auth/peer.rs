//! The address a per-client bound counts an anonymous caller by.

use std::net::IpAddr;

/// `address` as a per-client bound keys it: IPv4 (also when mapped into
/// IPv6) as it is, IPv6 by its /64, which one host can rotate through.
pub(crate) fn client_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
        v4 => v4,
    }
}
