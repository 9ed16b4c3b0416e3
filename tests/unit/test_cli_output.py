"""What the `vna` command prints is what was meant: no emoji codes, no markup."""

from __future__ import annotations

from deploy.cli_common import err, out


def test_a_fingerprint_with_emoji_codes_is_printed_as_it_is() -> None:
    # a SHA-256 fingerprint printed by `vna up` once read "...:55💿6B:48" (rich's ":cd:")
    fingerprint = "B0:AF:71:05:56:DF:B4:E0:1A:68:EB:69:E2:32:94:8E:55:72:CB:C3:97:CD:6B:48"
    for console in (out, err):
        with console.capture() as captured:
            console.print(f"  TLS certificate: (SHA-256 {fingerprint})", soft_wrap=True)
        assert fingerprint in captured.get()
