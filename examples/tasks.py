# %% [markdown]
# # Copying and counting (the paper's Figs. 2-4) on two small models
#
# Barbero et al. (2024), Sec. 3: models fail to copy the last digit of `1…10` sooner
# than the first digit of `01…1` (Fig. 2a); a hint (2b) and alternating digits (2c)
# change that; counting errors grow with the length (Fig. 3) and one answer, 100,
# dominates (Fig. 4). Here the same prompts (App. C.1, character for character) run on
# the embedded Gemma 3 270M (pretrained) and SmolLM2-135M-Instruct.
#
# Two ways of reading an answer: **teacher-forced scoring** (append the answer prefix,
# rank candidate answers by log-probability: works even when a model never follows the
# answer format) and **greedy generation + parsing** (the paper's method; the unparsed
# fraction is reported).
#
# Set `TL_GLASSES_QUICK=1` for a small run (CI).

# %%
import os

from IPython.display import display

import tl_glasses as tg
from tl_glasses.tasks import TaskResult

QUICK = os.environ.get("TL_GLASSES_QUICK") == "1"
MODELS = ["gemma-3-270m", "smollm2-135m"]
COPY_LENGTHS = [5, 50] if QUICK else [2, 10, 50, 100, 200]
COUNT_LENGTHS = [5, 20] if QUICK else [5, 20, 50, 100]
COUNT_TASKS = ["count_sum", "count_word"] if QUICK else ["count_sum", "count_ones", "count_ones_zeros", "count_word"]
OUT = None if QUICK else "out/examples/tasks"  # resumable result directories


def out(*parts):
    return None if OUT is None else os.path.join(OUT, *parts)


models = {name: tg.load_model(name) for name in MODELS}
tg.list_tasks()

# %% [markdown]
# How the prompt tokenises: every digit / "1" / word of the sequence must be one token of
# its own, or the task's length would not be what it claims (an error says which
# separator fixes it).

# %%
from tl_glasses.tasks import tokenization_report

tokenization_report(models["smollm2-135m"], "count_sum", [5, 50])

# %% [markdown]
# ## Fig. 2: copying the last vs the first digit, with a hint, alternating

# %%
copy = {}
for name, model in models.items():
    runs = []
    for task in ["copy_last", "copy_first"]:
        for opts in [{}, {"hint": True}, {"alternating": True}]:
            label = task + "".join(f"-{k}" for k in opts)
            runs.append(tg.evaluate(model, task, COPY_LENGTHS, out=out(name, label), progress=False, **opts))
    copy[name] = TaskResult.concat(runs)
    copy[name].meta["model"] = name
    display(copy[name].summary_by_n().pivot(index="n", columns="condition", values="logit_diff").round(2))
    copy[name].plot()

# %% [markdown]
# ## Fig. 3: counting error vs length, in the three modes (teacher-forced)

# %%
count = {}
for name, model in models.items():
    runs = []
    for mode in ["answer", "cot", "cot_fewshot"]:
        for task in COUNT_TASKS:
            runs.append(tg.evaluate(model, task, COUNT_LENGTHS, mode=mode, n_items=1 if QUICK else 2,
                                    out=out(name, f"{task}-{mode}"), progress=False))
    count[name] = TaskResult.concat(runs)
    count[name].meta["model"] = name
    display(count[name].summary_by_n().pivot(index="n", columns="condition", values="mae"))
    count[name].plot(kind="error")

# %% [markdown]
# ## Fig. 4: which answers the models give (greedy generation, parsed)

# %%
for name, model in models.items():
    gen = tg.evaluate(model, "count_sum", COUNT_LENGTHS, scoring="generate", max_new_tokens=16 if QUICK else 24,
                      out=out(name, "count_sum-generate"), progress=False)
    print(name, gen.summary())
    display(gen.df[["n", "answer", "prediction", "parse_status", "generation"]])
    display(gen.answer_histogram())
    gen.plot(kind="histogram")
