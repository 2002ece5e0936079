#!/usr/bin/env python3
"""A fedge client written from docs/protocol.md and proto/fedge/v1/ only.

It runs real fedge-coordinator processes with mutual TLS and, as two devices
of its own, registers, downloads the base and each round's adapter (checking
their SHA-256 against the headers and the registration), uploads an update in
three codecs (int8_row + zstd, float16, topk + zstd: one coordinator run each)
and submits it, round after round. It then checks the coordinator aggregated
every one of its updates (clients.csv).

It does not train: its "trained" adapter is the one it was sent plus a small
fixed change. What it tests is the wire contract, not learning.

Along the way it provokes every status code the proto's RPC comments list
("- CODE:" lines) and fails on any code a comment does not list. It prints
`metric conformance_rounds_accepted N`, `metric conformance_rounds_run N` and
`metric status_codes_documented_and_tested F` (the share of documented
(RPC, code) pairs it produced), and exits 1 on any failure.

Usage: conformance.py BIN_DIR [WORK_DIR]
Needs Debian's python3-grpcio, python3-grpc-tools, python3-numpy,
python3-protobuf and python3-zstandard, openssl, and the repository's proto/.
"""
import csv
import hashlib
import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import numpy as np
import zstandard

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_DIR = os.path.join(ROOT, "proto")
SERVICE_PROTO = os.path.join(PROTO_DIR, "fedge", "v1", "coordinator_service.proto")

failures = []
observed = set()  # (rpc, code name) answered by a coordinator
observed_lock = threading.Lock()
refused_submits = [0]  # SubmitUpdate calls answered with an error


def fail(message):
    print("FAIL: " + message, flush=True)
    failures.append(message)


def generate_stubs(out_dir):
    from grpc_tools import protoc
    files = [os.path.join(PROTO_DIR, "fedge", "v1", f)
             for f in ("tensor.proto", "transfer.proto", "task.proto",
                       "coordinator_service.proto")]
    args = ["protoc", "-I" + PROTO_DIR, "--python_out=" + out_dir,
            "--grpc_python_out=" + out_dir] + files
    if protoc.main(args) != 0:
        raise SystemExit("grpc_tools.protoc failed on " + PROTO_DIR)
    sys.path.insert(0, out_dir)


def documented_codes():
    """(rpc, CODE) pairs from the "- CODE:" lines above each rpc."""
    pairs = set()
    comment = []
    for line in open(SERVICE_PROTO):
        stripped = line.strip()
        if stripped.startswith("//"):
            comment.append(stripped)
            continue
        match = re.match(r"rpc (\w+)\(", stripped)
        if match:
            for c in comment:
                code = re.match(r"//\s*-\s*([A-Z_]+):", c)
                if code:
                    pairs.add((match.group(1), code.group(1)))
        comment = []
    return pairs


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Coordinator:
    """One fedge-coordinator process with mutual TLS."""

    def __init__(self, bin_dir, work, name, certs, base, flags):
        self.port = free_port()
        self.run_dir = os.path.join(work, "run-" + name)
        self.log = open(os.path.join(work, "coordinator-%s.log" % name), "w")
        command = [os.path.join(bin_dir, "fedge-coordinator"),
                   "--listen=127.0.0.1:%d" % self.port,
                   "--tls_cert=" + os.path.join(certs, "server.pem"),
                   "--tls_key=" + os.path.join(certs, "server.key"),
                   "--tls_ca=" + os.path.join(certs, "ca.pem"), "--mtls",
                   "--task_set=base=" + base, "--run_dir=" + self.run_dir,
                   "--metrics_listen=", "--threads=1", "--quiet",
                   "--retry_after_ms=50", "--eval_examples=100",
                   "--stream_idle_timeout_s=1"] + flags
        self.process = subprocess.Popen(command, stdout=self.log,
                                        stderr=subprocess.STDOUT)

    def wait(self, timeout=120):
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return None

    def log_text(self):
        self.log.flush()
        return open(self.log.name).read()


class Device:
    """One device: its own mutual-TLS channel, named by its certificate."""

    def __init__(self, pb, port, certs, device_id, identity):
        self.pb = pb
        self.id = device_id
        self.identity = identity
        read = lambda name: open(os.path.join(certs, name), "rb").read()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read("ca.pem"),
            private_key=read("client-%s.key" % device_id),
            certificate_chain=read("client-%s.pem" % device_id))
        # No BDP probing: the receive window stays at HTTP/2's 64 KiB, so a
        # download nobody reads stalls (the idle-timeout check below).
        self.channel = grpc.secure_channel(
            "127.0.0.1:%d" % port, credentials,
            options=[("grpc.http2.bdp_probe", 0)])
        grpc.channel_ready_future(self.channel).result(timeout=60)
        self.stub = pb.grpc.CoordinatorStub(self.channel)
        self.session = ""
        self.registration = None
        self.max_chunk = 1 << 20

    # Every call goes through `call`, which records the answer's code.
    def call(self, rpc, request, expect=None, **kwargs):
        method = getattr(self.stub, rpc)
        try:
            response = method(request, timeout=30, **kwargs)
            if rpc in ("Download", "Split"):  # Streams: read them out.
                response = list(response)
            code, error = "OK", None
        except grpc.RpcError as e:
            code, error, response = e.code().name, e, None
        record(rpc, code)
        if expect is not None and code != expect:
            fail("%s by %s: wanted %s, got %s (%s)" % (
                rpc, self.id, expect, code,
                error.details() if error else "no error"))
        return response, code, error

    def device_info(self, device_id=None, cores=2):
        m = self.pb.task
        return m.DeviceInfo(device_id=device_id or self.id, cores=cores,
                            memory_total_bytes=1 << 30,
                            memory_available_bytes=1 << 29,
                            memory_budget_bytes=1 << 29, arch="x86_64",
                            cpu_model="conformance", benchmark_gflops=1.0,
                            link_type=m.LINK_TYPE_ETHERNET,
                            software_version="conformance.py")

    def register(self, expect="OK"):
        s = self.pb.service
        request = s.RegisterRequest(device=self.device_info(),
                                    task=s.TaskIdentity(**self.identity))
        response, code, _ = self.call("Register", request, expect)
        if code == "OK":
            self.session = response.session_id
            self.registration = response
            self.max_chunk = response.max_chunk_bytes
        return code

    def download(self, transfer_id, expect_digest=None):
        """The payload's bytes, checked against its header's SHA-256."""
        s = self.pb.service
        chunks, code, error = self.call(
            "Download", s.DownloadRequest(device_id=self.id,
                                          transfer_id=transfer_id), "OK")
        if code != "OK":
            return None
        header = chunks[0].header
        data = b"".join(c.data for c in chunks)
        if chunks[0].offset != 0 or len(data) != header.total_bytes:
            fail("download %s: %d bytes, header says %d" % (
                transfer_id, len(data), header.total_bytes))
        if hashlib.sha256(data).digest() != header.sha256:
            fail("download %s: SHA-256 differs from its header" % transfer_id)
        if header.format != self.pb.transfer.PAYLOAD_FORMAT_SAFETENSORS:
            fail("download %s: format %d, wanted PAYLOAD_FORMAT_SAFETENSORS"
                 % (transfer_id, header.format))
        if expect_digest and hashlib.sha256(data).hexdigest() != expect_digest:
            fail("download %s: not the registration's base_model_digest"
                 % transfer_id)
        return data

    def upload(self, transfer_id, payload, expect="OK", sha=None, total=None,
               first_offset=0):
        """One Upload stream carrying `payload` from `first_offset`."""
        t = self.pb.transfer
        header = t.TransferHeader(
            transfer_id=transfer_id,
            total_bytes=len(payload) if total is None else total,
            sha256=sha or hashlib.sha256(payload).digest(),
            format=t.PAYLOAD_FORMAT_ENCODED_UPDATE, raw_bytes=len(payload))

        def chunks():
            offset = first_offset
            first = True
            while first or offset < len(payload):
                n = min(self.max_chunk, len(payload) - offset)
                chunk = t.Chunk(offset=offset, data=payload[offset:offset + n])
                if first:
                    chunk.header.CopyFrom(header)
                first = False
                offset += n
                yield chunk
        response, code, error = self.call("Upload", chunks(), expect)
        if code == "OK" and total is None and \
                response.committed_bytes != len(payload):
            fail("upload %s: committed %d of %d" % (
                transfer_id, response.committed_bytes, len(payload)))
        return code

    def report(self, task, upload_id=None, nonce=None, device_id=None):
        m = self.pb.task
        return self.pb.service.SubmitUpdateRequest(report=m.UpdateReport(
            device_id=device_id or self.id, round=task.round,
            nonce=task.nonce if nonce is None else nonce,
            upload_transfer_id=upload_id or task.upload_transfer_id,
            num_examples=1, loss_before=1.0, loss_after=1.0,
            timings=m.Timings(download_s=0.01, train_s=0.01, upload_s=0.01)))

    def get_task(self, stop_on=("OUT_OF_RANGE",)):
        """Polls until a task arrives; None when the federation ended."""
        s = self.pb.service
        while True:
            response, code, error = self.call(
                "GetTask", s.GetTaskRequest(device_id=self.id,
                                            session_id=self.session))
            if code in stop_on:
                return None, code
            if code == "NOT_FOUND":  # The coordinator forgot us: rejoin.
                self.register()
                continue
            if code != "OK":
                fail("GetTask by %s: %s (%s)" % (self.id, code,
                                                 error.details()))
                return None, code
            if response.HasField("task"):
                return response.task, code
            time.sleep(max(response.retry_after_ms, 20) / 1000.0)


def record(rpc, code):
    with observed_lock:
        observed.add((rpc, code))
        if rpc == "SubmitUpdate" and code != "OK":
            refused_submits[0] += 1


def read_safetensors(data):
    """name -> float32 array, in the file's order."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            fail("adapter tensor %s is %s, wanted F32" % (name, info["dtype"]))
            continue
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[base + start:base + end],
                                      dtype="<f4").reshape(info["shape"])
    return tensors


def encode_update(pb, tensors, codec, zstd, topk_fraction):
    """A CompressedPayload around an EncodedUpdate (docs/protocol.md)."""
    t = pb.transfer
    encoded = t.EncodedUpdate()
    for name, value in tensors.items():
        e = encoded.tensors.add(name=name, shape=list(value.shape))
        flat = np.ascontiguousarray(value, dtype="<f4")
        if codec == t.CODEC_FLOAT32:
            e.codec, e.values = codec, flat.tobytes()
        elif codec == t.CODEC_FLOAT16:
            e.codec, e.values = codec, flat.astype("<f2").tobytes()
        elif codec == t.CODEC_INT8_ROW:
            rows = flat.reshape(-1, flat.shape[-1] if flat.ndim else 1)
            scales = np.abs(rows).max(axis=1) / 127.0
            safe = np.where(scales > 0, scales, 1.0)
            q = np.clip(np.round(rows / safe[:, None]), -127, 127)
            e.codec, e.values = codec, q.astype("i1").tobytes()
            e.scales = scales.astype("<f4").tobytes()
            e.scales_dtype = pb.tensor.DTYPE_FLOAT32
        elif codec == t.CODEC_TOPK:
            change = flat.reshape(-1)
            k = min(change.size, int(math.ceil(topk_fraction * change.size)))
            index = np.sort(np.argsort(-np.abs(change), kind="stable")[:k])
            e.codec = codec
            e.values = change[index].astype("<f4").tobytes()
            e.values_dtype = pb.tensor.DTYPE_FLOAT32
            e.indices = index.astype("<u4").tobytes()
    serialized = encoded.SerializeToString()
    payload = t.CompressedPayload(uncompressed_bytes=len(serialized))
    if zstd:
        payload.compression = t.COMPRESSION_ZSTD
        payload.data = zstandard.ZstdCompressor(
            write_content_size=True).compress(serialized)
    else:
        payload.compression, payload.data = t.COMPRESSION_NONE, serialized
    return payload.SerializeToString()


def trained(sent, round_number):
    """The adapter the conformance device "trained": sent plus a fixed
    small change (it tests the wire, not learning)."""
    out = {}
    for i, (name, value) in enumerate(sent.items()):
        grid = np.arange(value.size, dtype=np.float32).reshape(value.shape)
        out[name] = value + 1e-3 * np.sin(grid + i + round_number)
    return out


def update_payload(pb, task, sent, round_number):
    t = pb.transfer
    new = trained(sent, round_number)
    if task.upload_codec == t.CODEC_TOPK:  # A change from what was sent.
        new = {name: new[name] - sent[name] for name in new}
    return encode_update(pb, new, task.upload_codec,
                         task.upload_compression == t.COMPRESSION_ZSTD,
                         task.topk_fraction)


def separate_residuals(payload, transfer_id):
    """docs/protocol.md section 4: (adapter, residual). The residual of
    the global change is added to the frozen weights and never uploaded;
    each target's residual comes in two halves whose outer widths are the
    adapter's."""
    marker = ".residual."
    adapter = {n: v for n, v in payload.items() if marker not in n}
    residual = {n: v for n, v in payload.items() if marker in n}
    for name, value in residual.items():
        module, half = name.split(marker)
        other = module + marker + ("lora_B" if half == "lora_A" else "lora_A")
        mine = adapter.get(module + ".adapter." + half)
        if other not in residual or mine is None:
            fail("download %s: residual %s has no matching half or adapter"
                 % (transfer_id, name))
            continue
        rank = residual[module + marker + "lora_A"].shape[0]
        if half == "lora_A" and value.shape[1:] != mine.shape[1:] or \
                half == "lora_B" and (value.shape[0] != mine.shape[0] or
                                      value.shape[1] != rank):
            fail("download %s: residual %s has shape %s against adapter %s"
                 % (transfer_id, name, value.shape, mine.shape))
    return adapter, residual


def honest_round(device, task):
    """Download, "train", upload and submit; True if accepted."""
    data = device.download(task.adapter_transfer_id)
    if data is None:
        return False
    sent, _ = separate_residuals(read_safetensors(data),
                                 task.adapter_transfer_id)
    payload = update_payload(device.pb, task, sent, task.round)
    if device.upload(task.upload_transfer_id, payload) != "OK":
        return False
    response, code, error = device.call("SubmitUpdate", device.report(task),
                                        "OK")
    if code == "OK" and not response.accepted:
        fail("SubmitUpdate OK without accepted")
    return code == "OK"


def run_device(device, rounds_done, before_submit=None, after_submit=None):
    """Rounds until the federation ends; the hooks run once, around the
    first round. Gives up after three refused rounds in a row: a client
    that cannot get an update accepted must not spin until the timeout."""
    refused = 0
    while True:
        task, code = device.get_task()
        if task is None:
            return
        if refused >= 3:
            fail("%s: three rounds in a row refused; giving up" % device.id)
            return
        if before_submit is not None:
            before_submit(device, task)
            before_submit = None
        if honest_round(device, task):
            rounds_done.append(task.round)
            refused = 0
        else:
            refused += 1
        if after_submit is not None:
            after_submit(device, task)
            after_submit = None


def abuse(x, z, b_task, pb):
    """The abuses device a commits while it holds its first task (the round
    waits for it): every documented code. x is registered nowhere (the
    registry is full), z is not on the allow-list, b_task is b's task of
    the same round."""
    s, t = pb.service, pb.transfer

    def abuses(device, task):
        # Register.
        bad = s.RegisterRequest(device=device.device_info(cores=-1),
                                task=s.TaskIdentity(**device.identity))
        device.call("Register", bad, "INVALID_ARGUMENT")
        other = s.RegisterRequest(device=device.device_info("dev-b"),
                                  task=s.TaskIdentity(**device.identity))
        device.call("Register", other, "PERMISSION_DENIED")
        wrong = dict(device.identity, name="another-task")
        device.call("Register", s.RegisterRequest(
            device=device.device_info(), task=s.TaskIdentity(**wrong)),
            "FAILED_PRECONDITION")
        z.register(expect="PERMISSION_DENIED")  # Not on the allow-list.
        x.register(expect="RESOURCE_EXHAUSTED")  # a, b, c fill it.
        # GetTask.
        device.call("GetTask", s.GetTaskRequest(
            device_id="dev-b", session_id=device.session), "PERMISSION_DENIED")
        device.call("GetTask", s.GetTaskRequest(
            device_id=device.id, session_id="stale"), "NOT_FOUND")
        # Download.
        device.call("Download", s.DownloadRequest(
            device_id=device.id, transfer_id="nope"), "NOT_FOUND")
        device.call("Download", s.DownloadRequest(
            device_id=device.id, transfer_id=task.adapter_transfer_id,
            offset=1 << 40), "OUT_OF_RANGE")
        # A download nobody reads: the stream stalls, and is cancelled.
        stalled = device.stub.Download(s.DownloadRequest(
            device_id=device.id, transfer_id=device.registration.base_transfer_id,
            chunk_bytes=4096), timeout=30)
        time.sleep(2.5)
        try:
            for _ in stalled:
                pass
            record("Download", "OK")
            fail("a stalled download was not cancelled")
        except grpc.RpcError as e:
            record("Download", e.code().name)
            if e.code() != grpc.StatusCode.CANCELLED:
                fail("stalled download: %s" % e.code().name)
        # Upload.
        sent, _ = separate_residuals(
            read_safetensors(device.download(task.adapter_transfer_id)),
            task.adapter_transfer_id)
        good = update_payload(pb, task, sent, task.round)
        headerless = iter([t.Chunk(offset=0, data=b"x")])
        device.call("Upload", headerless, "INVALID_ARGUMENT")
        device.upload("round-0/nope/update", good, "NOT_FOUND")
        device.upload(b_task.upload_transfer_id, good, "PERMISSION_DENIED")
        device.upload(task.upload_transfer_id, good, "RESOURCE_EXHAUSTED",
                      total=1 << 40)
        device.upload(task.upload_transfer_id, good, "DATA_LOSS",
                      sha=b"\0" * 32)

        def stall():  # A first chunk, then silence with the stream open.
            header = t.TransferHeader(
                transfer_id=task.upload_transfer_id, total_bytes=len(good),
                sha256=hashlib.sha256(good).digest(),
                format=t.PAYLOAD_FORMAT_ENCODED_UPDATE)
            yield t.Chunk(header=header, offset=0, data=good[:1])
            time.sleep(2.5)
        device.call("Upload", stall(), "CANCELLED")
        # UploadStatus: the stalled upload kept its first byte; an unknown
        # id is NOT_FOUND.
        status, _, _ = device.call("UploadStatus", s.UploadStatusRequest(
            device_id=device.id, transfer_id=task.upload_transfer_id), "OK")
        if status is not None and status.committed_bytes != 1:
            fail("UploadStatus after a stalled upload: %d bytes, wanted 1"
                 % status.committed_bytes)
        device.call("UploadStatus", s.UploadStatusRequest(
            device_id=device.id, transfer_id="nope"), "NOT_FOUND")
        # SubmitUpdate.
        device.call("SubmitUpdate", device.report(
            task, upload_id=b_task.upload_transfer_id), "PERMISSION_DENIED")
        device.call("SubmitUpdate", device.report(task),
                    "FAILED_PRECONDITION")  # Incomplete (1 byte).
        # Resume the stalled upload where UploadStatus said.
        device.upload(task.upload_transfer_id, good, first_offset=1)
        # A stale nonce must not destroy the valid upload it names.
        device.call("SubmitUpdate", device.report(task, nonce=b"stale"),
                    "FAILED_PRECONDITION")
        status, _, _ = device.call("UploadStatus", s.UploadStatusRequest(
            device_id=device.id, transfer_id=task.upload_transfer_id), "OK")
        if status is not None and status.committed_bytes != len(good):
            fail("a refused report destroyed the upload it named")
        # Another codec than the task's, then a size above the limits.
        other_codec = t.CODEC_FLOAT32 if task.upload_codec != \
            t.CODEC_FLOAT32 else t.CODEC_FLOAT16
        wrong_codec = encode_update(
            pb, trained(sent, 0), other_codec,
            task.upload_compression == t.COMPRESSION_ZSTD, 0.1)
        device.upload(task.upload_transfer_id, wrong_codec)
        device.call("SubmitUpdate", device.report(task), "INVALID_ARGUMENT")
        huge = t.CompressedPayload(compression=task.upload_compression,
                                   uncompressed_bytes=1 << 40,
                                   data=b"x").SerializeToString()
        device.upload(task.upload_transfer_id, huge)
        device.call("SubmitUpdate", device.report(task), "RESOURCE_EXHAUSTED")
        # Heartbeat, DeclineTask and Split.
        device.call("Heartbeat", s.HeartbeatRequest(
            device_id="dev-b", round=task.round), "PERMISSION_DENIED")
        x.call("Heartbeat", s.HeartbeatRequest(device_id="dev-x"), "NOT_FOUND")
        device.call("DeclineTask", s.DeclineTaskRequest(
            device_id="dev-b", round=task.round, nonce=task.nonce),
            "PERMISSION_DENIED")
        x.call("DeclineTask", s.DeclineTaskRequest(
            device_id="dev-x", round=task.round, nonce=task.nonce),
            "NOT_FOUND")
        device.call("DeclineTask", s.DeclineTaskRequest(
            device_id=device.id, round=task.round, nonce=b"stale"),
            "FAILED_PRECONDITION")
        split = lambda device_id, nonce, finish=True: iter([s.SplitMessage(
            device_id=device_id, round=task.round, nonce=nonce,
            finish=finish)])
        device.call("Split", split("dev-b", task.nonce), "PERMISSION_DENIED")
        x.call("Split", split("dev-x", task.nonce), "NOT_FOUND")
        device.call("Split", split(device.id, task.nonce),
                    "FAILED_PRECONDITION")  # This task has no split.
        device.call("Split", split(device.id, task.nonce, finish=False),
                    "INVALID_ARGUMENT")  # A step without activations.

        # Secure: this coordinator runs without secure aggregation.
        device.call("Secure", s.SecureRequest(
            device_id="dev-b", round=task.round, nonce=task.nonce),
            "PERMISSION_DENIED")
        device.call("Secure", s.SecureRequest(
            device_id=device.id, round=task.round, nonce=task.nonce),
            "FAILED_PRECONDITION")
        device.call("Secure", s.SecureRequest(
            device_id=device.id, round=task.round, nonce=task.nonce,
            advertise=s.SecAggAdvertisement(
                device=0, seal_public=b"k" * 31, mask_public=b"k" * 32,
                seed_digest=b"d" * 32)),
            "INVALID_ARGUMENT")  # A key of the wrong size.

        def silent():
            time.sleep(2.5)
            return
            yield
        device.call("Split", silent(), "CANCELLED")
        # SubmitUpdate with no upload stored (UploadStatus: NOT_FOUND).
        device.upload(task.upload_transfer_id, good, "DATA_LOSS",
                      sha=b"\1" * 32)
        device.call("SubmitUpdate", device.report(task), "NOT_FOUND")
    return abuses


def run_federation(bin_dir, work, certs, base, pb, identity, name, codec,
                   zstd, rounds, with_abuse):
    flags = ["--rounds=%d" % rounds, "--min_devices=2", "--max_steps=1",
             "--upload_codec=" + codec, "--zstd=%s" % str(zstd).lower(),
             "--topk_fraction=0.1", "--max_devices=3",
             "--allow_list=dev-a,dev-b,dev-c,dev-x"]
    coordinator = Coordinator(bin_dir, work, name, certs, base, flags)
    devices = {d: Device(pb, coordinator.port, certs, d, identity)
               for d in ("dev-a", "dev-b", "dev-c", "dev-x", "dev-z")}
    a, b = devices["dev-a"], devices["dev-b"]
    for d in (a, b):
        if d.register() != "OK":
            fail("%s could not register: %s" % (d.id, coordinator.log_text()))
            coordinator.process.kill()
            return 0
    base_data = a.download(a.registration.base_transfer_id,
                           a.registration.base_model_digest)
    if base_data is not None:
        read_safetensors(base_data)  # Parses.
    done = {"dev-a": [], "dev-b": []}
    a_hook = b_hook = None
    b_done = threading.Event()
    b_task = []
    refused_before = refused_submits[0]
    if with_abuse:
        devices["dev-c"].register()

        # a abuses while it holds its first task, once b has submitted
        # (the round waits for a meanwhile).
        def a_hook(device, task):
            if not b_done.wait(120):
                fail("dev-b never submitted its first round")
                return
            abuse(devices["dev-x"], devices["dev-z"], b_task[0], pb)(device,
                                                                     task)

        # b's first update, accepted, submitted again: a retried call whose
        # first answer was lost.
        def b_hook(device, task):
            b_task.append(task)
            device.call("SubmitUpdate", device.report(task), "ALREADY_EXISTS")
            b_done.set()
    threads = [threading.Thread(target=run_device,
                                args=(a, done["dev-a"], a_hook)),
               threading.Thread(target=run_device,
                                args=(b, done["dev-b"], None, b_hook))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    rc = coordinator.wait()
    if rc != 0:
        fail("coordinator (%s) exited %s:\n%s" % (name, rc,
                                                  coordinator.log_text()))
    accepted = 0
    try:
        rows = list(csv.DictReader(open(os.path.join(coordinator.run_dir,
                                                     "clients.csv"))))
    except OSError as e:
        fail("no clients.csv: %s" % e)
        rows = []
    for r in range(1, rounds + 1):
        statuses = {row["device"]: row["status"] for row in rows
                    if int(row["round"]) == r}
        if statuses.get("dev-a") == "accepted" and \
                statuses.get("dev-b") == "accepted":
            accepted += 1
        else:
            fail("%s round %d: clients.csv says %s" % (name, r, statuses))
    if with_abuse:
        refusals = list(csv.DictReader(open(os.path.join(coordinator.run_dir,
                                                         "refusals.csv"))))
        codes = sorted({row["code"] for row in refusals})
        print("%s: %d refusals recorded in refusals.csv (%s)" % (
            name, len(refusals), ", ".join(codes)))
        refused = refused_submits[0] - refused_before
        if len(refusals) != refused:
            fail("refusals.csv holds %d rows for %d refused SubmitUpdates"
                 % (len(refusals), refused))
    print("%s: %d of %d rounds accepted both devices' updates" % (
        name, accepted, rounds), flush=True)
    return accepted


def failed_federation(bin_dir, work, certs, base, pb, identity):
    """A federation whose round gets no update: GetTask then answers
    FAILED_PRECONDITION."""
    coordinator = Coordinator(bin_dir, work, "failing", certs, base, [
        "--rounds=2", "--min_devices=1", "--deadline_s=1", "--max_attempts=1",
        "--max_steps=1"])
    a = Device(pb, coordinator.port, certs, "dev-a", identity)
    a.register()
    task, _ = a.get_task()  # Taken, never submitted.
    s = pb.service
    for _ in range(100):
        _, code, _ = a.call("GetTask", s.GetTaskRequest(
            device_id=a.id, session_id=a.session))
        if code == "FAILED_PRECONDITION":
            break
        time.sleep(0.1)
    else:
        fail("GetTask never answered FAILED_PRECONDITION after the "
             "federation failed")
    coordinator.wait()


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    bin_dir = os.path.abspath(sys.argv[1])
    work = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp()
    os.makedirs(work, exist_ok=True)
    try:
        gen = os.path.join(work, "gen")
        os.makedirs(gen, exist_ok=True)
        generate_stubs(gen)
        from fedge.v1 import coordinator_service_pb2 as service
        from fedge.v1 import coordinator_service_pb2_grpc as service_grpc
        from fedge.v1 import task_pb2, tensor_pb2, transfer_pb2

        class pb:  # The generated modules, by role.
            pass
        pb.service, pb.grpc, pb.task = service, service_grpc, task_pb2
        pb.tensor, pb.transfer = tensor_pb2, transfer_pb2

        certs = os.path.join(work, "certs")
        subprocess.run([os.path.join(ROOT, "deploy", "certs",
                                     "make_dev_certs.sh"), certs, "dev-a",
                        "dev-b", "dev-c", "dev-x", "dev-z"], check=True,
                       stdout=subprocess.DEVNULL)
        base = os.path.join(work, "base")
        subprocess.run([os.path.join(bin_dir, "fedge-pretrain"),
                        "--out=" + base,
                        "--task_set=simulation.public_fraction=0.02",
                        "--epochs=1", "--dim=64", "--heads=4",
                        "--mlp_hidden=128", "--layers=2", "--threads=1",
                        "--progress_every=100000"], check=True,
                       stdout=subprocess.DEVNULL)
        # The built-in task's identity (tasks/fashion-mnist.json): an image
        # task has no tokenizer and no sequence length.
        identity = {"name": "fashion-mnist",
                    "objective": "image_classification",
                    "tokenizer_digest": "", "sequence_length": 0}
        rounds, accepted, run = 2, 0, 0
        for name, codec, zstd, with_abuse in (
                ("int8_row", "int8_row", True, True),
                ("float16", "float16", False, False),
                ("topk", "topk", True, False)):
            accepted += run_federation(bin_dir, work, certs, base, pb,
                                       identity, name, codec, zstd, rounds,
                                       with_abuse)
            run += rounds
        failed_federation(bin_dir, work, certs, base, pb, identity)

        documented = documented_codes()
        answered = {pair for pair in observed if pair[1] != "OK"}
        undocumented = sorted(answered - documented)
        if undocumented:
            fail("codes no RPC comment lists: %s" % undocumented)
        missing = sorted(documented - answered)
        if missing:
            fail("documented codes never produced: %s" % missing)
        share = len(documented & answered) / max(len(documented), 1)
        print("metric conformance_rounds_accepted %d" % accepted)
        print("metric conformance_rounds_run %d" % run)
        print("metric status_codes_documented_and_tested %.3f" % share)
        print("metric status_codes_documented %d" % len(documented))
    finally:
        if len(sys.argv) <= 2:
            shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("%d failure(s)" % len(failures))
        return 1
    print("conformance: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
