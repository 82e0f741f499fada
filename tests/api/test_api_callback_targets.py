"""Where a callback may go (issue 30, item 1): the address that was checked is the one connected to,
private callbacks never reach loopback, link-local, the compose services or the Docker and Kubernetes
API ports, and an allow-list of hosts holds. The network is the test's (callback_helpers.Net): names
answer what the test says, and no packet leaves the machine."""

from __future__ import annotations

import datetime
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from api_helpers import age, finish, root  # noqa: F401 (fixtures)
from callback_helpers import PUBLIC, Hook, hook_factory, net  # noqa: F401 (fixtures)

from konspekt import callbacks, inbox, uploads

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _network(net):  # noqa: F811 - every test here runs on the test's network
    return net


def finished(root, url, name="talk.mp4"):  # noqa: F811
    """An upload with ``url`` as its callback, quarantined (so it is due for its callback)."""
    upload = uploads.receive([name.encode()], name, root, "k1", 1 << 20, callback_url=url)
    age(root / "input" / upload.input_name)
    [claim] = inbox.claim(root, stable_seconds=1)
    finish(claim.video_dir, {"extract_audio": "bad_input"})
    inbox.finalize(root, claim.video_dir)
    return upload


def test_a_name_that_rebinds_to_loopback_after_the_check_reaches_nothing_there(net, root):  # noqa: F811
    """DNS rebinding: the name answers a public address to the check, then 127.0.0.1. The callback
    goes to the address that was checked (a loopback stand-in for it here); the loopback receiver on
    the URL's own port, which a second lookup would reach, sees nothing."""
    internal = Hook()  # what sits on 127.0.0.1 in the real attack: docker-proxy's API, say
    public = Hook()  # stands in for the public address the name answered first
    try:
        net.name("rebind.example", PUBLIC, "127.0.0.1")
        net.route(PUBLIC, internal.port, public.port)
        upload = finished(root, f"http://rebind.example:{internal.port}/images/create?fromImage=evil")
        assert callbacks.notify(root, upload.id, attempts=2, base_delay=0.01) is True
        assert internal.received == []
        [(path, payload, _, headers, _)] = public.received
        assert payload["id"] == upload.id and path == "/images/create?fromImage=evil"
        assert headers["Host"] == f"rebind.example:{internal.port}"  # the name, though the address was pinned
        assert net.connects == [(PUBLIC, internal.port)]  # only the checked address, once
        assert net.lookups == ["rebind.example"]  # resolved once, not again to connect
    finally:
        internal.close()
        public.close()


def test_every_address_a_name_answers_is_checked(net):  # noqa: F811
    net.name("mixed.example", f"{PUBLIC},127.0.0.1")
    with pytest.raises(ValueError, match="loopback"):
        callbacks.check_url("http://mixed.example/hook", callbacks.Policy(allow_private=True))


BYPASSES = [
    "http://127.0.0.1/", "http://127.0.0.1./", "http://localhost/", "http://localhost./", "http://a.localhost/",
    "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/", "http://[::127.0.0.1]/",
    "http://2130706433/", "http://0x7f000001/", "http://017700000001/", "http://0x7f.1/", "http://127.1/",
    "http://0177.0.0.1/", "http://0/", "http://0.0.0.0/", "http://[::]/", "http://0.1.2.3/",
    "http://169.254.169.254/latest/meta-data", "http://[fe80::1]/", "http://[::ffff:169.254.169.254]/",
    "http://metadata.google.internal/", "http://224.0.0.1/", "http://[ff02::1]/", "http://255.255.255.255/",
    "http://user:pw@93.184.216.34/", "http://93.184.216.34@127.0.0.1/", "http://127.0.0.1\\@93.184.216.34/",
    "http://docker-proxy:2375/images/create", "http://docker-proxy/", "http://DOCKER-PROXY./",
    "http://konspekt-docker-proxy-1/", "http://postgres:5432/", "http://redis:6379/", "http://registry:5000/v2/",
    "http://docker-host:2375/", "http://airflow-apiserver:8080/", "http://airflow-worker-7/",
    "http://image-builder/", "http://host.docker.internal/", "http://kubernetes.default.svc/",
    "http://10.0.0.1:2375/", "http://10.0.0.1:2376/", "http://192.168.1.5:6443/", "http://10.0.0.1:10250/pods",
    "http://10.0.0.1:10255/", "http://10.0.0.1:2379/", "https://93.184.216.34:2380/",
]


@pytest.mark.parametrize("url", BYPASSES)
def test_private_callbacks_still_never_reach_this_machine_its_services_or_their_apis(url):
    with pytest.raises(ValueError):
        callbacks.check_url(url, callbacks.Policy(allow_private=True))


def test_a_lan_receiver_is_taken_where_private_callbacks_are_allowed(net):  # noqa: F811
    net.name("printer.lan.example", "192.168.1.7")
    for url in ("http://192.168.1.7:8000/hook", "http://printer.lan.example/hook", "http://10.1.2.3/"):
        assert callbacks.check_url(url, callbacks.Policy(allow_private=True)) == url
        with pytest.raises(ValueError, match="private"):
            callbacks.check_url(url)


def test_a_name_with_a_compose_services_address_is_refused(net):  # noqa: F811
    """On the compose network the service names resolve; any other name that gives one of their
    addresses (a container's alias, an attacker's DNS) is refused as the service itself would be."""
    net.name("docker-proxy", "172.18.0.5")
    net.name("postgres", "172.18.0.2")
    net.name("innocent.example", "172.18.0.5")
    net.name("nas.example", "172.18.0.9")
    net.name("mapped.example", "::ffff:172.18.0.5")
    private = callbacks.Policy(allow_private=True)
    for name in ("innocent.example", "mapped.example"):
        with pytest.raises(ValueError, match="docker-proxy"):
            callbacks.check_url(f"http://{name}/hook", private)
    with pytest.raises(ValueError, match="postgres"):
        callbacks.check_url("http://172.18.0.2/", private)
    assert callbacks.check_url("http://nas.example/hook", private) == "http://nas.example/hook"


def test_the_services_callbacks_refuse_are_those_of_docker_compose():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert set(compose["services"]) <= callbacks.COMPOSE_SERVICES, "add the new service to callbacks.COMPOSE_SERVICES"


def test_only_the_hosts_of_the_allow_list_are_called(net):  # noqa: F811
    for name in ("hooks.example.org", "a.lms.example.edu", "b.a.lms.example.edu", "lms.example.edu",
                 "evil.example", "hooks.example.org.evil.example", "xlms.example.edu"):
        net.name(name, PUBLIC)
    net.name("rebound.lms.example.edu", "127.0.0.1")
    policy = callbacks.Policy.of(False, "hooks.example.org, *.lms.example.edu.")
    for host in ("hooks.example.org", "HOOKS.example.org.", "a.lms.example.edu", "b.a.lms.example.edu"):
        assert callbacks.check_url(f"https://{host}/x", policy)
    for host in ("lms.example.edu", "evil.example", "hooks.example.org.evil.example", "xlms.example.edu", PUBLIC):
        with pytest.raises(ValueError, match="KONSPEKT_API_CALLBACK_HOSTS"):
            callbacks.check_url(f"https://{host}/x", policy)
    with pytest.raises(ValueError, match="loopback"):  # listed, but the address checks still apply
        callbacks.check_url("https://rebound.lms.example.edu/x", policy)


def test_the_allow_list_comes_from_the_settings(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "dags"))
    from konspekt_dags.settings import Settings

    monkeypatch.setenv("KONSPEKT_API_CALLBACK_HOSTS", "hooks.example.org,*.lms.example.edu")
    assert callbacks.Policy.of(False, Settings().api_callback_hosts).hosts == ("hooks.example.org", "*.lms.example.edu")
    monkeypatch.delenv("KONSPEKT_API_CALLBACK_HOSTS")
    assert callbacks.Policy.of(False, Settings().api_callback_hosts).hosts == ()


PROXIED = """
import socket, sys
sys.path.insert(0, sys.argv[1])
from callback_helpers import PUBLIC, Net
net, port = Net(), int(sys.argv[2])
socket.getaddrinfo = net.getaddrinfo
socket.socket.connect = lambda sock, address: net.connect(sock, address)
net.name("hook.example", PUBLIC)
net.route(PUBLIC, port, port)
from konspekt import callbacks  # imported with the proxy variables set, as the api-server is
print(callbacks.deliver(f"http://hook.example:{port}/hook", {"id": "x"}, attempts=1))
"""


def test_proxy_variables_are_not_used_for_callbacks(hook_factory):  # noqa: F811
    """A proxy (set for the api-server's own downloads, say) would see, and could redirect, every callback."""
    hook, proxy = hook_factory(), Hook()
    try:
        proxy_url = proxy.url.removesuffix("/hook")
        env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
        env.update({name: proxy_url for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy")})
        run = subprocess.run([sys.executable, "-c", PROXIED, str(Path(__file__).parent), str(hook.port)], env=env,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr[-2000:]
        assert proxy.received == [] and len(hook.received) == 1
    finally:
        proxy.close()


def _tls_for(name: str, folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a self-signed certificate for ``name``, and a client context trusting it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / f"{name}.pem", folder / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    return server, ssl.create_default_context(cafile=str(cert_file))


def test_https_goes_to_the_pinned_address_with_sni_and_the_certificate_checked_for_the_name(
        net, hook_factory, tmp_path):  # noqa: F811
    server, client = _tls_for("hooks.example.org", tmp_path)
    hook = hook_factory(tls=server, scheme="https")
    net.name("hooks.example.org", PUBLIC, "127.0.0.1")
    url = f"https://hooks.example.org:{hook.port}/hook"
    assert callbacks.deliver(url, {"id": "x"}, attempts=1, ssl_context=client) is True
    assert hook.sni == ["hooks.example.org"] and hook.received[0][3]["Host"] == f"hooks.example.org:{hook.port}"
    assert net.connects == [(PUBLIC, hook.port)]
    # a certificate for another name is refused, although the address is the one checked
    _, other = _tls_for("other.example", tmp_path)
    assert callbacks.deliver(url, {"id": "y"}, attempts=1, ssl_context=other) is False
    assert len(hook.received) == 1
