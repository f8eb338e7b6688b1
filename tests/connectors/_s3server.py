"""A real S3-compatible HTTP server for tests: moto's server as a process of its own on 127.0.0.1.

It checks request signatures against its own IAM: the first three requests (allowed without
credentials) create a user with an access key and a policy allowing every S3 action; from then
on, every request must be signed with that key. So wrong credentials are refused as a real
S3 store refuses them.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import boto3
from botocore.config import Config

from tests.conftest import stop_process

POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    url: str
    process: subprocess.Popen
    access_key: str = ""
    secret_key: str = ""

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        return boto3.client("s3", endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=access_key or self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key,
                            config=Config(retries={"max_attempts": 1}))

    def stop(self) -> None:
        stop_process(self.process)


def start_s3_server() -> S3Server:
    port = free_port()
    env = os.environ | {"INITIAL_NO_AUTH_ACTION_COUNT": "3", "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    server = S3Server(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"the S3 test server exited with {process.returncode}: {err[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            break
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the S3 test server did not listen on 127.0.0.1:{port} within 30 s")
        time.sleep(0.1)
    iam = boto3.client("iam", endpoint_url=server.url, region_name=REGION, aws_access_key_id="bootstrap",
                       aws_secret_access_key="bootstrap", config=Config(retries={"max_attempts": 1}))
    iam.create_user(UserName="bastion-test")
    key = iam.create_access_key(UserName="bastion-test")["AccessKey"]
    iam.put_user_policy(UserName="bastion-test", PolicyName="s3-all", PolicyDocument=POLICY)
    server.access_key, server.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
    return server
