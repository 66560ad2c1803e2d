"""A tiny local stand-in for the tfds catalog's `ag_news_subset`, built into a folder (no download)."""

TOPICS = ('world', 'sports', 'business', 'science')


def build_ag_news_subset(catalog: str, num_train: int = 40, num_test: int = 12) -> None:
  """Prepares `ag_news_subset` (array_record) under `catalog`: example i has the title
  '<TOPIC> headline i', the description 'a story about <topic> number i' and label i % 4."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core import registered  # pylint: disable=g-import-not-at-top
  with registered.skip_registration():  # the real catalog builder of this name must stay untouched

    class AgNewsSubset(tfds.core.GeneratorBasedBuilder):
      """The catalog set's name and features, with generated examples."""
      name = 'ag_news_subset'
      VERSION = tfds.core.Version('1.0.0')

      def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            'description': tfds.features.Text(), 'title': tfds.features.Text(),
            'label': tfds.features.ClassLabel(names=['World', 'Sports', 'Business', 'Sci/Tech'])}))

      def _split_generators(self, dl_manager):
        return {'train': self._generate_examples(num_train, 0), 'test': self._generate_examples(num_test, 1000)}

      def _generate_examples(self, n, first):
        for i in range(n):
          yield first + i, {'title': f'{TOPICS[i % 4].upper()} headline {i}',
                            'description': f'a story about {TOPICS[i % 4]} number {i}', 'label': i % 4}

    AgNewsSubset(data_dir=catalog, file_format='array_record').download_and_prepare()
