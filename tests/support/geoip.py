"""Small GeoIP databases for tests, written with mmdb-writer in the MaxMind DB format `maxminddb` reads."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

__all__ = ["country_db", "write_country_db"]


def write_country_db(path: Path, networks: Mapping[str, tuple[str, str]]) -> Path:
    """A GeoLite2-Country-shaped database: CIDR -> (continent code, country ISO code)."""
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    for cidr, (continent, country) in networks.items():
        writer.insert_network(IPSet([cidr]), {"continent": {"code": continent}, "country": {"iso_code": country}})
    writer.to_db_file(str(path))
    return path


def country_db(networks: Mapping[str, tuple[str, str]]) -> Path:
    """`write_country_db` into a fresh temporary folder (for module-level test data)."""
    return write_country_db(Path(tempfile.mkdtemp(prefix="geoip-")) / "country.mmdb", networks)
