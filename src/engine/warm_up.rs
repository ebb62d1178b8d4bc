//! The texts every engine detects before readiness turns SERVING.
//!
//! lingua's models are compiled into the binary and only mapped: the first
//! lookups in each model page-fault its data in (the first lingua call of a
//! cold replica took ~21 ms and grew RSS by 28 MB, see BENCHMARKS.md). A
//! short, a medium and a long text per supported language touch the upper
//! levels of every model and the n-grams that ordinary text uses, so the
//! first real call finds them mapped. The texts are the project's own; they
//! are not an accuracy set (the engines may disagree on the short ones).

use super::Language;

/// `(language, text)`: three texts per language, short (20–40 characters),
/// medium (40–100) and long (over 100).
pub const TEXTS: &[(Language, &str)] = &[
    (Language::Czech, "Dobré ráno, jak se dnes máte?"),
    (
        Language::Czech,
        "Včera večer jsme šli s přáteli na procházku podél řeky.",
    ),
    (
        Language::Czech,
        "Naše město má krásné staré náměstí, kde se každou sobotu konají trhy s čerstvou zeleninou, ovocem a domácím chlebem.",
    ),
    (Language::Dutch, "Goedemorgen, hoe gaat het met je?"),
    (
        Language::Dutch,
        "Gisteren zijn we met de fiets naar het strand gereden.",
    ),
    (
        Language::Dutch,
        "In de zomer wordt het in onze stad erg druk, omdat veel toeristen de grachten en de oude huizen willen bekijken.",
    ),
    (Language::English, "Good morning, how are you today?"),
    (
        Language::English,
        "We walked along the river and talked about the weekend.",
    ),
    (
        Language::English,
        "The library in our town opens early on weekdays, and many students come to read quietly before their classes begin.",
    ),
    (Language::French, "Bonjour, comment allez-vous ?"),
    (
        Language::French,
        "Nous avons passé une très belle soirée chez nos voisins.",
    ),
    (
        Language::French,
        "Chaque matin, la boulangerie du quartier prépare des croissants et du pain frais que les habitants achètent avant le travail.",
    ),
    (Language::German, "Guten Morgen, wie geht es dir?"),
    (
        Language::German,
        "Wir sind gestern mit dem Zug nach München gefahren.",
    ),
    (
        Language::German,
        "Im Herbst sammeln die Kinder bunte Blätter im Wald, und abends trinkt die ganze Familie zusammen warmen Tee in der Küche.",
    ),
    (Language::Italian, "Buongiorno, come stai oggi?"),
    (
        Language::Italian,
        "Ieri sera abbiamo mangiato una pizza buonissima in centro.",
    ),
    (
        Language::Italian,
        "Durante l'estate molte famiglie vanno al mare, dove i bambini giocano sulla spiaggia mentre i genitori leggono il giornale.",
    ),
    (Language::Polish, "Dzień dobry, jak się masz?"),
    (
        Language::Polish,
        "Wczoraj wieczorem czytałem ciekawą książkę o historii.",
    ),
    (
        Language::Polish,
        "W naszym mieście jest duży park, w którym ludzie spacerują z psami, a dzieci bawią się na placu zabaw aż do wieczora.",
    ),
    (Language::Portuguese, "Bom dia, como você está?"),
    (
        Language::Portuguese,
        "Ontem fomos à praia com os nossos amigos e comemos peixe.",
    ),
    (
        Language::Portuguese,
        "A cidade onde nasci fica perto das montanhas, e no inverno as pessoas gostam de beber chocolate quente nas pastelarias.",
    ),
    (Language::Russian, "Доброе утро, как у вас дела?"),
    (
        Language::Russian,
        "Вчера мы долго гуляли по парку и разговаривали о жизни.",
    ),
    (
        Language::Russian,
        "Зимой в нашем городе выпадает много снега, и дети каждый день катаются на санках с высокой горки возле школы.",
    ),
    (Language::Spanish, "Buenos días, ¿cómo estás hoy?"),
    (
        Language::Spanish,
        "Ayer por la tarde fuimos al mercado a comprar fruta fresca.",
    ),
    (
        Language::Spanish,
        "En mi barrio hay una pequeña librería donde los vecinos se reúnen los jueves para hablar de las novelas que han leído.",
    ),
    (Language::Swedish, "God morgon, hur mår du idag?"),
    (
        Language::Swedish,
        "Igår åkte vi till landet och plockade blåbär i skogen.",
    ),
    (
        Language::Swedish,
        "På sommaren bor många familjer i små röda stugor vid sjön, där de fiskar, badar och grillar tillsammans på kvällarna.",
    ),
    (Language::Turkish, "Günaydın, bugün nasılsınız?"),
    (
        Language::Turkish,
        "Dün akşam arkadaşlarımla birlikte sinemaya gittik.",
    ),
    (
        Language::Turkish,
        "Yazın büyükannemin köyüne gideriz, orada bahçedeki ağaçlardan meyve toplar ve akşamları çay içerek sohbet ederiz.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_has_a_short_a_medium_and_a_long_text() {
        for language in Language::ALL {
            let mut lengths: Vec<usize> = TEXTS
                .iter()
                .filter(|(l, _)| *l == language)
                .map(|(_, t)| t.chars().count())
                .collect();
            lengths.sort_unstable();
            assert_eq!(lengths.len(), 3, "{language:?}");
            assert!((20..=40).contains(&lengths[0]), "{language:?} {lengths:?}");
            assert!((40..=100).contains(&lengths[1]), "{language:?} {lengths:?}");
            assert!(lengths[2] > 100, "{language:?} {lengths:?}");
        }
    }
}
