"""Data cards for a round's datasets: Hugging Face YAML header + Datasheets-for-Datasets sections,
plus what a reviewer of generated preference data needs (models, settings, scores, annotators).

Layer 4: reads pipeline/ and reward_model/ outputs through the round's manifest; never imports flows/.
"""

from data_cards.datasets import CARD_FILE
from data_cards.lint import lint_card, lint_path
from data_cards.render import render_card, write_round_cards, write_stage_card

__all__ = ["CARD_FILE", "lint_card", "lint_path", "render_card", "write_round_cards", "write_stage_card"]
