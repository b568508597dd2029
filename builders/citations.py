"""BibTeX of the works every card and builder cites (one place, so they are fixed once)."""

from __future__ import annotations

# The paper the datasets rebuild (SPEC §1; the text in shared/seed is the anonymous submission).
# Authors as on its later, published version: confirm before publishing.
PAPER = """@misc{zietlow2021clearing,
  title  = {Clearing the Path for Truly Semantic Representation Learning},
  author = {Zietlow, Dominik and Rolinek, Michal and Martius, Georg},
  year   = {2021},
  note   = {Perturbed dSprites and Shapes3D that keep every generative factor but break
            beta-VAE-style disentanglement}
}"""

DSPRITES = """@misc{dsprites17,
  author       = {Loic Matthey and Irina Higgins and Demis Hassabis and Alexander Lerchner},
  title        = {dSprites: Disentanglement testing Sprites dataset},
  howpublished = {https://github.com/deepmind/dsprites-dataset/},
  year         = {2017}
}"""

SHAPES3D = """@misc{3dshapes18,
  title        = {3D Shapes Dataset},
  author       = {Burgess, Chris and Kim, Hyunjik},
  howpublished = {https://github.com/deepmind/3dshapes-dataset/},
  year         = {2018}
}"""

LICENSE = "apache-2.0"  # the package's, dSprites' and 3dshapes' licence
