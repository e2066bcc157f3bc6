"""``strangler admission``: the waiting rooms of the running gateway; ``strangler admission rotate-key``."""

from __future__ import annotations

import argparse

from gateway.cli.client import admin_client
from gateway.cli.output import console, print_json
from gateway.cli.rollout_commands import room_table


def cmd_admission(args: argparse.Namespace) -> int:
    client = admin_client(args)
    if args.action == "rotate-key":
        out = client.call("POST", "/api/admission/rotate-key", {})
        if args.json:
            print_json(out)
        else:
            print(f"key {out['kid']} signs tickets from now on; still accepted: "
                  f"{', '.join(str(k) for k in out['accepted'])} (older keys verify until their grace ends)")
        return 0
    rooms = client.call("GET", "/api/admission")
    if args.json:
        print_json(rooms)
    elif not rooms:
        print("no route has a waiting room (an `admission:` block in routes.yaml)")
    else:
        console().print(room_table([{"name": r["route"], "admission": r} for r in rooms]))
    return 0
