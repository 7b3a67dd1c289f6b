"""Token usage of a turn: prices from settings.MODEL_PRICES and the per-turn accumulator (agents.usage)."""

from django.test import SimpleTestCase, override_settings

from agents.usage import TurnTokenAccumulator, price_micros

PRICES = {"small": [150_000, 600_000], "large": [2_000_000, 8_000_000]}


@override_settings(MODEL_PRICES=PRICES)
class PriceTests(SimpleTestCase):
    def test_prices_per_million_tokens(self) -> None:
        """Cost is prompt and completion tokens times their price per million, in micro-dollars."""
        self.assertEqual(price_micros("small", 1_000_000, 0), 150_000)
        self.assertEqual(price_micros("small", 1000, 500), 150 + 300)
        self.assertEqual(price_micros("large", 10_000, 1_000), 20_000 + 8_000)

    def test_unknown_model_costs_nothing(self) -> None:
        """A model missing from the price table costs 0."""
        self.assertEqual(price_micros("mystery", 10_000, 10_000), 0)

    @override_settings(MODEL_PRICES={"broken": ["x", None]})
    def test_malformed_price_costs_nothing(self) -> None:
        """A malformed price entry costs 0 instead of failing the turn."""
        self.assertEqual(price_micros("broken", 10, 10), 0)


@override_settings(MODEL_PRICES=PRICES)
class AccumulatorTests(SimpleTestCase):
    def test_empty_accumulator_has_no_usage(self) -> None:
        """With no model call there is no usage to store."""
        accumulator = TurnTokenAccumulator()
        self.assertFalse(accumulator)
        self.assertIsNone(accumulator.as_usage())

    def test_sums_every_call(self) -> None:
        """Usage sums tokens and cost over every model call of the turn."""
        accumulator = TurnTokenAccumulator()
        accumulator.add("small", 1000, 100)
        accumulator.add("small", 2000, 200)
        usage = accumulator.as_usage()
        self.assertEqual(
            (
                usage["model"],
                usage["prompt_tokens"],
                usage["completion_tokens"],
                usage["total_tokens"],
                usage["cost_micros"],
            ),
            ("small", 3000, 300, 3300, 150 + 60 + 300 + 120),
        )
        self.assertEqual(len(usage["call_details"]), 2)

    def test_breaks_usage_down_per_model(self) -> None:
        """Calls to several models are broken down per model with their own cost and call count."""
        accumulator = TurnTokenAccumulator()
        accumulator.add("small", 1000, 100)
        accumulator.add("large", 1000, 100)
        accumulator.add("small", 1000, 100)
        usage = accumulator.as_usage()
        self.assertEqual(usage["model"], "small")
        self.assertEqual(
            usage["model_breakdown"],
            {
                "small": {
                    "prompt_tokens": 2000,
                    "completion_tokens": 200,
                    "total_tokens": 2200,
                    "cost_micros": 420,
                    "calls": 2,
                },
                "large": {
                    "prompt_tokens": 1000,
                    "completion_tokens": 100,
                    "total_tokens": 1100,
                    "cost_micros": 2800,
                    "calls": 1,
                },
            },
        )
        self.assertEqual(usage["cost_micros"], 420 + 2800)

    def test_unknown_model_is_counted_at_zero_cost(self) -> None:
        """Tokens of an unpriced model are counted; their cost is 0."""
        accumulator = TurnTokenAccumulator()
        accumulator.add("local", 7, 9)
        usage = accumulator.as_usage()
        self.assertEqual((usage["total_tokens"], usage["cost_micros"]), (16, 0))

    def test_missing_or_negative_counts_are_zero(self) -> None:
        """None or negative token counts from a provider count as 0."""
        accumulator = TurnTokenAccumulator()
        accumulator.add("small", None, -5)
        self.assertEqual(accumulator.as_usage()["total_tokens"], 0)
