"""`biotp data list` / `biotp data fetch NAME`: the datasets."""

from __future__ import annotations

from .options import add_data_dir


def add_parser(sub):
    d = sub.add_parser("data", help="list or download datasets")
    actions = d.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="which datasets are present")
    add_data_dir(listing)
    listing.set_defaults(action=_list)
    fetch = actions.add_parser("fetch", help="download a dataset and verify its checksums")
    fetch.add_argument("name", help="mnist, fashion_mnist or cifar10")
    add_data_dir(fetch)
    fetch.set_defaults(action=_fetch)
    return d


def run(args) -> int:
    return args.action(args)


def _list(args) -> int:
    from ..data import describe

    print(describe(args.data_dir))
    return 0


def _fetch(args) -> int:
    from ..data import fetch

    path = fetch(args.name, args.data_dir)
    print(f"{args.name}: ready in {path}")
    return 0
