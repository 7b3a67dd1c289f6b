from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandParser

from agents.sweeper import asweep


class Command(BaseCommand):
    help = "Finalize as `interrupted` the turns whose server process died (stale heartbeat)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--stale-after", type=float, default=None, help="seconds without heartbeat (default: TURN_STALE_SECONDS)"
        )

    def handle(self, *args: object, stale_after: float | None = None, **options: object) -> None:
        finalized = async_to_sync(asweep)(stale_after)
        self.stdout.write(f"finalized {len(finalized)} interrupted turn(s)")
