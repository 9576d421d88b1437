//! What is refused from the text of a statement before any data is read.

use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::{
    Error, MAX_EXPRESSION_OPERATORS, MAX_NAME_PARTS, MAX_NESTING, MAX_STATEMENT_OPERATORS,
    PARSE_STACK,
};

/// The functions a statement may call: aggregates, window functions, and scalar functions
/// whose result is no larger than their arguments by more than a constant. Left out are
/// those that make data from nothing (`repeat`, `lpad`, `rpad`, `array_repeat`, `range`,
/// `generate_series`, ...): `SELECT repeat('a', 300000000)` is 300 MB that no memory pool
/// sees, and ten of them took a gigabyte. Sorted, for the binary search.
const ALLOWED_FUNCTIONS: &[&str] = &[
    "abs",
    "acos",
    "acosh",
    "approx_distinct",
    "approx_median",
    "approx_percentile_cont",
    "approx_percentile_cont_with_weight",
    "array_agg",
    "arrow_typeof",
    "ascii",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "avg",
    "bit_and",
    "bit_length",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "btrim",
    "cardinality",
    "cbrt",
    "ceil",
    "char_length",
    "character_length",
    "coalesce",
    "concat",
    "concat_ws",
    "corr",
    "cos",
    "cosh",
    "cot",
    "count",
    "covar",
    "covar_pop",
    "covar_samp",
    "cume_dist",
    "current_date",
    "current_time",
    "date_bin",
    "date_part",
    "date_trunc",
    "datepart",
    "datetrunc",
    "degrees",
    "dense_rank",
    "ends_with",
    "exp",
    "extract",
    "factorial",
    "first_value",
    "floor",
    "from_unixtime",
    "gcd",
    "greatest",
    "ifnull",
    "initcap",
    "isnan",
    "iszero",
    "lag",
    "last_value",
    "lcm",
    "lead",
    "least",
    "left",
    "length",
    "levenshtein",
    "ln",
    "log",
    "log10",
    "log2",
    "lower",
    "ltrim",
    "make_date",
    "max",
    "md5",
    "mean",
    "median",
    "min",
    "nanvl",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "nvl",
    "nvl2",
    "octet_length",
    "percent_rank",
    "percentile_cont",
    "pi",
    "position",
    "pow",
    "power",
    "radians",
    "random",
    "rank",
    "regexp_count",
    "regexp_like",
    "regexp_match",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "reverse",
    "right",
    "round",
    "row_number",
    "rtrim",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "signum",
    "sin",
    "sinh",
    "split_part",
    "sqrt",
    "starts_with",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "strpos",
    "substr",
    "substring",
    "sum",
    "tan",
    "tanh",
    "to_char",
    "to_date",
    "to_hex",
    "to_timestamp",
    "to_timestamp_micros",
    "to_timestamp_millis",
    "to_timestamp_nanos",
    "to_timestamp_seconds",
    "to_unixtime",
    "trim",
    "trunc",
    "upper",
    "uuid",
    "var",
    "var_pop",
    "var_samp",
];

/// Every check that needs no data: the token checks and a parse on a stack of its own.
/// The handler runs it before taking a permit, so a burst of bad statements is answered
/// 400, not 503; planning runs it again on the query's thread.
pub fn check_text(sql: &str) -> Result<DfStatement, Error> {
    // Tokenized once for both token checks. What does not tokenize, the parser refuses
    // with its own syntax error.
    if let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() {
        check_names(&tokens)?;
        check_operator_tokens(&tokens)?;
    }
    // Parsed on a fresh stack big enough for any statement the limits let through,
    // whatever thread this runs on.
    stacker::grow(PARSE_STACK, || parse_query(sql))
}

/// Refuses a dotted name of more than [`MAX_NAME_PARTS`] parts. DataFusion 52's planner
/// panics on one of six or more parts that names no field (an `unwrap` on "Incorrect number
/// of identifiers" in `sql_compound_identifier_to_expr`; found by the `sql_request` fuzz
/// target), and no table here has nested fields for such a name to reach. Checked on the
/// tokens, so every place a name can stand (select list, `COPY (...)`, defaults) is covered.
fn check_names(tokens: &[Token]) -> Result<(), Error> {
    let (mut parts, mut after_period) = (0usize, false);
    for token in tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))) {
        match token {
            Token::Word(_) if after_period => {
                parts += 1;
                after_period = false;
            }
            Token::Word(_) => parts = 1,
            Token::Period if parts > 0 && !after_period => after_period = true,
            _ => (parts, after_period) = (0, false),
        }
        if parts > MAX_NAME_PARTS {
            return Err(Error::invalid(format!(
                "sql: a dotted name has more than {MAX_NAME_PARTS} parts; names are at most \
                 catalog.schema.table.column.field"
            )));
        }
    }
    Ok(())
}

/// A 400 naming `what` when its `count` of operators is over `limit`.
fn over_limit(what: &'static str, count: usize, limit: usize) -> Result<(), Error> {
    if count <= limit {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "sql: {what} has {count} operators or function calls; at most {limit} are accepted \
         (split the work into simpler expressions)"
    )))
}

/// Refuses a statement of more than [`MAX_STATEMENT_OPERATORS`] operators, counted on the
/// tokens before anything is parsed. DataFusion 52's planner spends time growing with the
/// fourth power of an expression's size on one it cannot fold (hashing every sub-expression
/// while it works out equivalences and orderings; 47 s for one `GROUP BY` key of 256
/// operators, found by the `sql_request` fuzz target), and neither planning nor a
/// statement's parse tree (an operator chain is as deep as it is long, and the checks below
/// walk it recursively) can be interrupted by the query timeout. This bound keeps both
/// small; [`check_expressions`] then bounds each expression.
fn check_operator_tokens(tokens: &[Token]) -> Result<(), Error> {
    use datafusion::sql::sqlparser::keywords::Keyword;
    let operators = tokens
        .iter()
        .filter(|token| match token {
            Token::Word(w) => matches!(
                w.keyword,
                Keyword::AND
                    | Keyword::OR
                    | Keyword::XOR
                    | Keyword::NOT
                    | Keyword::IS
                    | Keyword::LIKE
                    | Keyword::ILIKE
                    | Keyword::SIMILAR
                    | Keyword::BETWEEN
                    | Keyword::IN
                    | Keyword::COLLATE
                    | Keyword::AT
            ),
            // Everything else that is not a name, a literal or punctuation is an operator.
            Token::EOF
            | Token::Number(..)
            | Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Comma
            | Token::Whitespace(_)
            | Token::LParen
            | Token::RParen
            | Token::Period
            | Token::SemiColon
            | Token::LBracket
            | Token::RBracket
            | Token::LBrace
            | Token::RBrace
            | Token::Placeholder(_) => false,
            _ => true,
        })
        .count();
    over_limit("the statement", operators, MAX_STATEMENT_OPERATORS)
}

/// Counts, for every expression, the operators and function calls in it and in what it
/// holds; stops at the first over [`MAX_EXPRESSION_OPERATORS`]. Names, literals and
/// parentheses are free.
#[derive(Default)]
struct ExpressionSize {
    /// One count per expression being walked, innermost last.
    open: Vec<usize>,
}

impl datafusion::sql::sqlparser::ast::Visitor for ExpressionSize {
    type Break = usize;

    fn pre_visit_expr(
        &mut self,
        _expr: &datafusion::sql::sqlparser::ast::Expr,
    ) -> std::ops::ControlFlow<usize> {
        self.open.push(0);
        std::ops::ControlFlow::Continue(())
    }

    fn post_visit_expr(
        &mut self,
        expr: &datafusion::sql::sqlparser::ast::Expr,
    ) -> std::ops::ControlFlow<usize> {
        use datafusion::sql::sqlparser::ast::Expr;
        let inner = self.open.pop().unwrap_or(0);
        let own = usize::from(!matches!(
            expr,
            Expr::Identifier(_)
                | Expr::CompoundIdentifier(_)
                | Expr::Value(_)
                | Expr::TypedString(_)
                | Expr::Nested(_)
                | Expr::Wildcard(_)
                | Expr::QualifiedWildcard(..)
        ));
        let size = inner + own;
        if size > MAX_EXPRESSION_OPERATORS {
            return std::ops::ControlFlow::Break(size);
        }
        if let Some(outer) = self.open.last_mut() {
            *outer += size;
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// Refuses an expression of more than [`MAX_EXPRESSION_OPERATORS`] operators and function
/// calls (why: [`check_operator_tokens`]; that check has run, so the walk is shallow).
fn check_expressions(statement: &datafusion::sql::sqlparser::ast::Statement) -> Result<(), Error> {
    use datafusion::sql::sqlparser::ast::Visit;
    match statement.visit(&mut ExpressionSize::default()) {
        std::ops::ControlFlow::Break(size) => {
            over_limit("an expression", size, MAX_EXPRESSION_OPERATORS)
        }
        std::ops::ControlFlow::Continue(()) => Ok(()),
    }
}

/// Parses `sql` into its one statement, refusing what is not a query (`EXPLAIN` included:
/// its plan cannot be cut to a row limit), nesting deeper than [`MAX_NESTING`], an
/// expression over [`MAX_EXPRESSION_OPERATORS`], and a typed literal whose value is not a
/// string. DataFusion 52 plans a statement before it refuses DDL or DML, and its planner
/// panics on a typed literal such as `DATE 5` or `TIMESTAMP :x` (an `unwrap` of the value as
/// a string in `sql_expr_to_logical_expr`; found by the `sql_request` fuzz target).
fn parse_query(sql: &str) -> Result<DfStatement, Error> {
    use datafusion::error::DataFusionError;
    use datafusion::sql::parser::DFParserBuilder;
    use datafusion::sql::sqlparser::ast::{Expr, Statement, visit_expressions};
    use datafusion::sql::sqlparser::parser::ParserError;
    use std::ops::ControlFlow;
    // sqlparser's parser has a recursion limit but no stack guard, and takes ~85 KiB of
    // stack per level in a debug build: at DataFusion's own limit (50), 23 nested `NOT`s
    // overflowed a 2 MiB thread stack. Hence the lower limit, and the caller's own stack.
    let parsed = DFParserBuilder::new(sql)
        .with_recursion_limit(MAX_NESTING)
        .build()
        .and_then(|mut parser| parser.parse_statements());
    let mut statements = match parsed {
        Ok(statements) => statements,
        Err(DataFusionError::SQL(e, _)) if matches!(*e, ParserError::RecursionLimitExceeded) => {
            return Err(Error::invalid(format!(
                "sql: the statement is nested too deeply (subqueries, parentheses, calls, \
                 CASE, NOT); at most {MAX_NESTING} levels are accepted"
            )));
        }
        Err(e) => return Err(Error::invalid(format!("sql: {e}"))),
    };
    let statement = match (statements.pop_front(), statements.is_empty()) {
        (Some(statement), true) => statement,
        (None, _) => return Err(Error::invalid("sql: no statement")),
        (Some(_), false) => {
            return Err(Error::invalid(
                "sql: one statement per request; this has more",
            ));
        }
    };
    let query = match &statement {
        DfStatement::Statement(inner) if matches!(**inner, Statement::Query(_)) => inner,
        _ => {
            return Err(Error::invalid(
                "sql: only queries are accepted (SELECT, WITH, VALUES); this endpoint is read-only",
            ));
        }
    };
    let typed = visit_expressions(&**query, |expr| match expr {
        Expr::TypedString(t) if t.value.clone().into_string().is_none() => {
            ControlFlow::Break(t.data_type.to_string())
        }
        _ => ControlFlow::Continue(()),
    });
    if let ControlFlow::Break(data_type) = typed {
        return Err(Error::invalid(format!(
            "sql: a {data_type} literal takes a quoted string, as in {data_type} '...'"
        )));
    }
    check_expressions(query)?;
    check_functions(query)?;
    Ok(statement)
}

/// Finds a table function in a statement: a relation with arguments, `LATERAL f(...)` or
/// `TABLE(...)`.
struct TableFunctions;

impl datafusion::sql::sqlparser::ast::Visitor for TableFunctions {
    type Break = String;

    fn pre_visit_table_factor(
        &mut self,
        factor: &datafusion::sql::sqlparser::ast::TableFactor,
    ) -> std::ops::ControlFlow<String> {
        use datafusion::sql::sqlparser::ast::TableFactor;
        match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => std::ops::ControlFlow::Break(name.to_string()),
            TableFactor::TableFunction { .. } => std::ops::ControlFlow::Break("TABLE".into()),
            _ => std::ops::ControlFlow::Continue(()),
        }
    }
}

/// Refuses a call of a function outside [`ALLOWED_FUNCTIONS`], and any table function
/// (`FROM range(...)`): see there why.
fn check_functions(statement: &datafusion::sql::sqlparser::ast::Statement) -> Result<(), Error> {
    use datafusion::sql::sqlparser::ast::{Expr, visit_expressions};
    use std::ops::ControlFlow;
    let called = visit_expressions(statement, |expr| match expr {
        Expr::Function(f) => {
            let name = f
                .name
                .0
                .last()
                .map(|p| p.to_string().trim_matches('"').to_ascii_lowercase())
                .unwrap_or_default();
            if ALLOWED_FUNCTIONS.binary_search(&name.as_str()).is_ok() {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(name)
            }
        }
        _ => ControlFlow::Continue(()),
    });
    if let ControlFlow::Break(name) = called {
        return Err(Error::invalid(format!(
            "sql: `{name}` is not one of the functions this endpoint offers (aggregates, window \
             functions and scalar functions whose result cannot outgrow their arguments)"
        )));
    }
    // `FROM range(10)` parses as a relation with arguments.
    if let ControlFlow::Break(name) =
        datafusion::sql::sqlparser::ast::Visit::visit(statement, &mut TableFunctions)
    {
        return Err(Error::invalid(format!(
            "sql: table functions such as `{name}(...)` are not offered; query the tables"
        )));
    }
    Ok(())
}
