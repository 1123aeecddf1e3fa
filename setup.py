"""Package layout (the rest of the metadata is in setup.cfg). The stage scripts, recipes and accelerate configs
live at the top of the repository, where `accelerate launch scripts/sft.py --config recipes/...` finds them; a
wheel ships copies of them inside the package, as llm_recipes/_project/{scripts,recipes,accelerate_configs}, so
that `llm-recipes` runs its stages from any directory after `pip install` (see llm_recipes.PROJECT_ROOT).
setup.cfg cannot list these packages next to the ones `find:` discovers, hence this file."""

from setuptools import find_packages, setup

SHIPPED = {  # package inside the wheel -> folder in the repository
    "llm_recipes._project.scripts": "scripts",
    "llm_recipes._project.recipes": "recipes",
    "llm_recipes._project.accelerate_configs": "accelerate_configs",
}

setup(
    packages=[*find_packages("src"), *SHIPPED],
    package_dir={"": "src", **SHIPPED},
    package_data={
        "llm_recipes": ["py.typed", "evaluation/metrics/*/*.py", "curation/wordlists/*.txt", "serving/*.html"],
        "llm_recipes._project.scripts": ["slurm/*"],
        "llm_recipes._project.recipes": ["**/*.yaml", "**/*.json"],
        "llm_recipes._project.accelerate_configs": ["*.yaml"],
    },
)
