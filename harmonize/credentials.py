"""S3 credentials from the boto3 credential chain, handed to GDAL and s3fs.

GDAL (``/vsis3/``) and s3fs each look for credentials their own way; boto3's chain is the one
users set up (environment, shared ``credentials``/``config`` profiles, SSO, instance and
container roles). :func:`configure_s3_access` resolves it once with a ``boto3.Session`` and
sets the result as the environment both read, as odc-stac's ``configure_s3_access`` does;
:class:`S3AccessPlugin` does the same on every dask worker, and calling either again refreshes
temporary credentials before they expire.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

from harmonize.errors import HarmonizeError

__all__ = ["aws_credentials", "configure_s3_access", "S3AccessPlugin"]


def aws_credentials(profile: str | None = None, *, session: Any = None) -> dict[str, str]:
    """The current credentials of boto3's chain as GDAL/s3fs environment variables.

    Parameters
    ----------
    profile
        A named profile of the shared files (default: boto3's own choice, ``AWS_PROFILE`` or the
        environment's keys).
    session
        A ``boto3.Session`` to use instead of a new one.

    Returns
    -------
    dict
        ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN`` (temporary
        credentials only) and ``AWS_REGION`` (when known).

    Raises
    ------
    HarmonizeError
        If the chain finds no credentials, or the profile does not exist.
    """
    import boto3
    import botocore.exceptions

    try:
        session = session or boto3.Session(profile_name=profile)
        creds = session.get_credentials()
    except botocore.exceptions.ProfileNotFound as exc:
        raise HarmonizeError(
            f"{exc}; name a profile of your AWS config files, or unset AWS_PROFILE."
        ) from None
    if creds is None:
        raise HarmonizeError(
            "no AWS credentials found (environment, shared profiles, SSO, instance or container "
            "role); configure them (`aws configure`), or read public buckets with AWS_NO_SIGN_REQUEST=YES."
        )
    frozen = creds.get_frozen_credentials()  # refreshes temporary credentials that expire soon
    out = {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key}
    if frozen.token:
        out["AWS_SESSION_TOKEN"] = frozen.token
    if session.region_name:
        out["AWS_REGION"] = session.region_name
    return out


def configure_s3_access(
    profile: str | None = None,
    *,
    requester_pays: bool = False,
    session: Any = None,
    environ: MutableMapping[str, str] | None = None,
) -> dict[str, str]:
    """Resolve boto3's credentials and set them where GDAL and s3fs read them.

    Call it again in a long job to refresh temporary credentials (it re-resolves the chain).

    Parameters
    ----------
    profile, session
        See :func:`aws_credentials`.
    requester_pays
        Also set ``AWS_REQUEST_PAYER=requester`` (GDAL) for requester-pays buckets.
    environ
        Where to set them (default ``os.environ``).

    Returns
    -------
    dict
        The variables set.
    """
    env = os.environ if environ is None else environ
    opts = aws_credentials(profile, session=session)
    if "AWS_SESSION_TOKEN" not in opts:
        env.pop("AWS_SESSION_TOKEN", None)  # a stale token would spoil the new keys
    if requester_pays:
        opts["AWS_REQUEST_PAYER"] = "requester"
    env.update(opts)
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()  # cached file systems keep the old keys
    except ImportError:
        pass
    return opts


class S3AccessPlugin:
    """A dask ``WorkerPlugin``: :func:`configure_s3_access` on every worker as it starts
    (``client.register_plugin(S3AccessPlugin(profile="analyst"))``), so workers on other
    machines resolve their own chain (their instance role, say) rather than receive keys."""

    name = "harmonize-s3-access"

    def __init__(self, profile: str | None = None, *, requester_pays: bool = False) -> None:
        self.profile = profile
        self.requester_pays = requester_pays

    def setup(self, worker: Any = None) -> None:
        configure_s3_access(self.profile, requester_pays=self.requester_pays)

    def teardown(self, worker: Any = None) -> None:
        pass
