"""Classify: rule model, loader (file:line errors), engine (SPEC §3.4 precedence), accounts.

The public interface: `load_ruleset` / `check_ruleset` read and validate a rule directory,
`classify` applies a RuleSet to one ParsedMessage under a ClassifyContext. See docs/rules.md.
"""

from bridge.classify.engine import ClassifyContext, classify
from bridge.classify.loader import check_ruleset, load_ruleset
from bridge.classify.problems import Problem, RuleSetError
from bridge.classify.ruleset import RuleSet

__all__ = ["ClassifyContext", "Problem", "RuleSet", "RuleSetError", "check_ruleset",
           "classify", "load_ruleset"]
