"""TLS for the operator side: HTTPS on the admin port (checked with real curl), plain HTTP for machines."""

import datetime
import ipaddress
import json
import re
import socket
import ssl
import subprocess

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ks.cli.main import cli

from helpers import MAC1, bootid_of, free_port, require_command
from server import ServerProcess


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca_and_server_cert(directory) -> tuple:
    """A self-signed CA and a server certificate it signed for 127.0.0.1 and localhost; the PEM paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("KIWIspray test CA")).issuer_name(_name("KIWIspray test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


@pytest.fixture
def tls_server(root, tmp_path, cli_runner):
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    admin_port = free_port()
    with ServerProcess(root, "--tls-cert", str(cert), "--tls-key", str(key), "--admin-port", str(admin_port)) as srv:
        r = cli_runner.invoke(cli, ["--root", str(root), "token", "create", "ops"])
        assert r.exit_code == 0, r.output
        yield srv, admin_port, ca, r.output.splitlines()[0]


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_command("curl", "curl"), "--silent", "--show-error", "--max-time", "10", *args],
                          capture_output=True, text=True)


def test_the_admin_api_answers_over_https_with_the_ca(tls_server):
    srv, admin_port, ca, token = tls_server
    url = f"https://127.0.0.1:{admin_port}/api/v1/hosts"
    r = curl("--cacert", str(ca), "-H", f"Authorization: Bearer {token}", "-w", "\n%{http_code} %{scheme}", url)
    body, status = r.stdout.rsplit("\n", 1)
    assert r.returncode == 0 and status == "200 HTTPS", r.stderr
    assert json.loads(body) == {"hosts": [], "total": 0, "limit": 1000, "offset": 0}
    # Kept alive: two requests on one TLS connection.
    r = curl("--cacert", str(ca), "-H", f"Authorization: Bearer {token}", "-w", "%{http_code}\n", "-o", "/dev/null",
             url, "-o", "/dev/null", f"https://localhost:{admin_port}/api/v1/configurations")
    assert r.stdout.split() == ["200", "200"], r.stderr
    # Without the CA the certificate is not trusted; plain HTTP on the HTTPS port is no request.
    assert curl(url).returncode == 60
    assert curl(f"http://127.0.0.1:{admin_port}/api/v1/hosts").returncode != 0
    # Boot-side paths are not served on the admin port.
    r = curl("--cacert", str(ca), "-w", "\n%{http_code}", f"https://127.0.0.1:{admin_port}/bootstrap?net0={MAC1}")
    assert r.stdout.endswith("\n404") and "plain HTTP" in r.stdout


def test_the_plain_port_refuses_the_operator_side_and_boots_as_before(tls_server, root):
    srv, admin_port, ca, token = tls_server
    r = curl("-H", f"Authorization: Bearer {token}", "-w", "\n%{http_code}", srv.url + "/api/v1/hosts")
    body, status = r.stdout.rsplit("\n", 1)
    assert status == "403" and f"HTTPS on port {admin_port}" in json.loads(body)["error"]
    for path in ("/ui/", "/ui/hosts", "/ui", "/"):
        r = requests.get(srv.url + path, timeout=10)
        assert r.status_code == 403 and f"HTTPS on port {admin_port}" in r.text, path
    # The iPXE flow on the plain port, unchanged.
    chain = requests.get(srv.url + "/bootstrap.ipxe", timeout=10).text
    assert f"chain http://127.0.0.1:{srv.port}/bootstrap?net0=" in chain
    assert 'state "new"' in requests.get(srv.url + "/bootstrap", params={"net0": MAC1}, timeout=10).text
    r = curl("--cacert", str(ca), "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json",
             "-X", "PATCH", "-d", '{"state": "image1"}', f"https://127.0.0.1:{admin_port}/api/v1/hosts/1")
    assert json.loads(r.stdout)["chain"] == ["image1"], r.stdout + r.stderr
    script = requests.get(srv.url + "/bootstrap", params={"net0": MAC1}, timeout=10).text
    assert "boots image image1" in script and f"http://127.0.0.1:{srv.port}/" in script
    finish = requests.get(srv.url + "/finish", params={"id": 1, "bootid": bootid_of(script)}, timeout=10)
    assert finish.status_code == 200
    r = curl("--cacert", str(ca), "-H", f"Authorization: Bearer {token}", f"https://127.0.0.1:{admin_port}/api/v1/hosts/1")
    assert json.loads(r.stdout)["state"] == "finished"


def test_tls_settings_come_together_and_a_bad_certificate_stops_the_server(root, tmp_path, cli_runner):
    r = cli_runner.invoke(cli, ["--root", str(root), "serve", "--tls-cert", "x.pem", "--admin-port", "8443"])
    assert r.exit_code == 1 and "all three" in r.output
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    r = cli_runner.invoke(cli, ["--root", str(root), "serve", "--tls-cert", str(tmp_path / "bad.pem"),
                                "--tls-key", str(tmp_path / "bad.pem"), "--admin-port", "8443"])
    assert r.exit_code == 1 and "cannot use the TLS certificate" in r.output and "Traceback" not in r.output


def test_a_dashboard_session_over_https_gets_a_secure_cookie(tls_server):
    srv, admin_port, ca, token = tls_server
    browser, trust = requests.Session(), str(ca)  # verify= on each call: it wins over REQUESTS_CA_BUNDLE
    base = f"https://127.0.0.1:{admin_port}/ui"
    page = browser.get(base + "/login", verify=trust, timeout=10)
    assert page.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = browser.post(base + "/login", data={"token": token, "csrf": csrf}, allow_redirects=False, verify=trust,
                     timeout=10)
    assert r.status_code == 302, r.text
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("kiwispray_session=")
    assert {"Secure", "HttpOnly", "SameSite=Lax", "Path=/ui"} <= {part.strip() for part in cookie.split(";")}, cookie
    assert browser.get(base + "/", verify=trust, timeout=10).status_code == 200  # logged in over HTTPS


def test_clients_that_stall_in_their_body_over_tls_do_not_stop_the_operator_side(tls_server):
    srv, admin_port, ca, token = tls_server
    context = ssl.create_default_context(cafile=str(ca))
    stalled = []
    try:
        for _ in range(40):  # more than every running slot of both workers
            s = context.wrap_socket(socket.create_connection(("127.0.0.1", admin_port)), server_hostname="127.0.0.1")
            s.sendall(b"POST /ui/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                      b"Content-Length: 100000\r\n\r\nx")
            stalled.append(s)
        url = f"https://127.0.0.1:{admin_port}/api/v1/hosts"
        for _ in range(3):
            r = curl("--cacert", str(ca), "-H", f"Authorization: Bearer {token}", "-w", "%{http_code}",
                     "-o", "/dev/null", url)
            assert r.stdout == "200", r.stderr
    finally:
        for s in stalled:
            s.close()
