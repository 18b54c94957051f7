"""ALS training, tuning, evaluation metrics, top-N scoring and baselines. May import transforms and lake.

Every model implements models.base.Recommender (fit / recommend / similar_items / save / load);
:func:`load_recommender` opens any saved one.
"""


def load_recommender(spark, path: str):
    """Load a model saved by any Recommender.save(path), whatever its class."""
    from models.als import AlsRecommender, BiasedAlsRecommender
    from models.base import read_model_file
    from models.baseline import BiasBaseline
    from models.popularity import PopularityRecommender

    classes = {cls.__name__: cls for cls in (AlsRecommender, BiasedAlsRecommender, PopularityRecommender, BiasBaseline)}
    name = read_model_file(spark, path)["class"]
    if name not in classes:
        raise TypeError(f"{path} holds an unknown model class {name!r}; known: {sorted(classes)}")
    return classes[name].load(spark, path)
